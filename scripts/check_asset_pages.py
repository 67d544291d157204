"""Open asset pages of the Dagster UI in headless Chromium; fail when a picture is missing.

    python scripts/check_asset_pages.py [--home DAGSTER_HOME] [--out DIR] [ASSET ...]

Starts ``dagster-webserver`` on the instance in ``--home`` (default: this folder, where
``make demo`` records its runs) on a free loopback port, loads each asset's page with
Debian's ``chromium`` (JavaScript run, then the DOM dumped), saves a screenshot of each
into ``--out`` and exits 1 naming every asset whose page shows no inline PNG. The assets
checked by default are the ones whose metadata carries a picture: patch_sets (sample grid),
test_report (confusion matrix, threshold curve), robustness_report (robustness plot).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = ("patch_sets", "test_report", "robustness_report")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=20000"]
INLINE_PNG = "data:image/png;base64,"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=3)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"dagster-webserver did not answer at {url}") from None
            time.sleep(1)


def _chromium(*args: str) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    out = subprocess.run([browser, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=180)
    return out.stdout


def check(home: Path, assets: list[str], out: Path) -> list[str]:
    """The assets whose page shows no inline picture (empty: all good)."""
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = os.environ | {"DAGSTER_HOME": str(home)}
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen([str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1",
                             "-p", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    missing = []
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/server_info", proc)
        for asset in assets:
            url = f"{base}/assets/{asset}"
            dom = _chromium("--dump-dom", url)
            _chromium(f"--screenshot={out / (asset + '.png')}", "--window-size=1400,2400", url)
            shown = dom.count(INLINE_PNG)
            print(f"{asset}: {shown} inline picture(s); screenshot {out / (asset + '.png')}")
            if shown == 0:
                missing.append(asset)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assets", nargs="*", default=list(DEFAULT_ASSETS))
    parser.add_argument("--home", type=Path, default=REPO, help="DAGSTER_HOME holding the runs")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "screenshots")
    args = parser.parse_args()
    missing = check(args.home.resolve(), args.assets, args.out)
    if missing:
        print(f"no picture on the page of: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
