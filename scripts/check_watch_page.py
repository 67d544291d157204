"""Open the line station's status page in headless Chromium; fail when it shows no decision.

    python scripts/check_watch_page.py MODEL CAPTURE [CAPTURE ...] [--out DIR]

Starts ``smh-ml watch`` on an empty temporary folder (the status page on a free loopback
port), copies the captures in, waits until the results log holds a line for each, then has
Debian's ``chromium`` (headless) render the page: its DOM must hold one decision card per
capture and a heat-map picture for every decided one, and its screenshot is saved as
``DIR/watch_page.png``. Exits 1 naming what is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from check_asset_pages import CHROMIUM_FLAGS, _free_port  # the script beside this one


def _chromium(*args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found: apt-get install chromium")
    return subprocess.run([browser, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("captures", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("watch-page"))
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        folder, log = Path(tmp) / "line", Path(tmp) / "decisions.jsonl"
        folder.mkdir()
        env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1"}
        station = subprocess.Popen([sys.executable, "-m", "smh_ml.cli", "watch", str(folder), "--model", args.model,
                                    "--log", str(log), "--status-port", str(port)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(3)
            for i, capture in enumerate(args.captures):
                staged = folder / f".{i}{capture.suffix}.part"
                shutil.copyfile(capture, staged)
                staged.rename(folder / f"{i:03d}-{capture.name}")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if log.is_file() and len(log.read_text().splitlines()) >= len(args.captures):
                    break
                time.sleep(0.5)
            else:
                print(f"the station logged no line for every capture within 120 s: {log}", file=sys.stderr)
                return 1
            time.sleep(0.5)
            url = f"http://127.0.0.1:{port}/"
            dom = _chromium("--dump-dom", url).stdout
            args.out.mkdir(parents=True, exist_ok=True)
            _chromium("--window-size=1400,1100",
                      f"--screenshot={args.out.resolve() / 'watch_page.png'}", url)
        finally:
            station.send_signal(signal.SIGTERM)
            try:
                output = station.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                station.kill()
                output = station.communicate()[0]
    cards, pictures = dom.count("data-decision="), dom.count("/heatmap/")
    errors = dom.count("class=\"err\"") + dom.count("class='err'")
    print(f"page {url}: {cards} decision card(s), {pictures} heat map(s), {errors} error(s); "
          f"screenshot {args.out / 'watch_page.png'}")
    problems = []
    if cards < len(args.captures):
        problems.append(f"{cards} decision card(s) on the page for {len(args.captures)} capture(s)")
    if pictures < cards - errors:
        problems.append(f"{pictures} heat map(s) for {cards - errors} decided capture(s)")
    if problems:
        print("; ".join(problems) + "\n" + output[-2000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
