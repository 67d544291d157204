"""Open asset pages of the Dagster UI in headless Chromium; fail when a picture is missing.

    python scripts/check_asset_pages.py [--home DAGSTER_HOME] [--out DIR] [ASSET ...]

Starts ``dagster-webserver`` on the instance in ``--home`` (default: this folder, where
``make demo`` records its runs) on a free loopback port, loads each asset's page in Debian's
``chromium`` (headless, driven over the DevTools protocol), opens the picture's "[Show
Markdown]" (the UI shows markdown over 1,000 characters behind it), saves a screenshot of
each into ``--out`` and exits 1 naming every asset whose page shows no inline PNG. The assets
checked by default are the ones whose metadata carries a picture: patch_sets (sample grid),
test_report (confusion matrix, threshold curve), robustness_report (robustness plot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
                  "--hide-scrollbars"]


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


class Browser:
    """Headless Chromium driven over the DevTools protocol: the Dagster UI renders long
    markdown metadata (a picture as a data URI) behind a "[Show Markdown]" button, so the page
    must be clicked, not just loaded."""

    def __init__(self, profile_dir: Path):
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
        self.port = _free_port()
        self.proc = subprocess.Popen([browser, *CHROMIUM_FLAGS, f"--remote-debugging-port={self.port}",
                                      f"--user-data-dir={profile_dir}", "--window-size=1400,1800", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(f"http://127.0.0.1:{self.port}/json/version", self.proc, 60)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        self.ws_url = json.load(urllib.request.urlopen(request, timeout=10))["webSocketDebuggerUrl"]
        self._id = 0

    async def _call(self, ws, method: str, **params):
        self._id += 1
        await ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") == self._id:
                return message.get("result", {})

    async def _eval(self, ws, expression: str):
        result = await self._call(ws, "Runtime.evaluate", expression=expression, returnByValue=True,
                                  awaitPromise=True)
        return result.get("result", {}).get("value")

    async def _pictures(self, url: str, screenshot: Path, wait: float) -> int:
        import base64

        import websockets

        async with websockets.connect(self.ws_url, max_size=2**26) as ws:
            await self._call(ws, "Page.enable")
            await self._call(ws, "Page.navigate", url=url)
            deadline = time.time() + wait
            while time.time() < deadline and not await self._eval(ws, SHOW_MARKDOWN_PRESENT):
                await asyncio.sleep(1)
            await asyncio.sleep(2)
            await self._eval(ws, DISMISS_DIALOGS)  # the UI's one-time "join the community" prompt
            await asyncio.sleep(1)
            await self._eval(ws, CLICK_SHOW_MARKDOWN)
            await asyncio.sleep(2)
            await self._eval(ws, DISMISS_DIALOGS)
            await asyncio.sleep(1)
            shown = await self._eval(ws, COUNT_INLINE_PNG) or 0
            shot = await self._call(ws, "Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            return int(shown)

    def pictures(self, url: str, screenshot: Path, wait: float = 60) -> int:
        """Load ``url``, open its first "[Show Markdown]" and count inline PNGs; save a screenshot."""
        return asyncio.run(self._pictures(url, screenshot, wait))

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


SHOW_MARKDOWN_PRESENT = "[...document.querySelectorAll('*')].some(e => e.textContent === '[Show Markdown]')"
DISMISS_DIALOGS = ("[...document.querySelectorAll('button')].filter(b => b.textContent.trim() === 'Skip')"
                   ".forEach(b => b.click())")
CLICK_SHOW_MARKDOWN = ("(() => { const e = [...document.querySelectorAll('*')].find("
                       "x => x.children.length === 0 && x.textContent === '[Show Markdown]');"
                       " if (e) { e.click(); return true; } return false; })()")
COUNT_INLINE_PNG = "document.querySelectorAll('img[src^=\"data:image/png;base64,\"]').length"


def check(home: Path, assets: list[str], out: Path) -> list[str]:
    """The assets whose page shows no inline picture (empty: all good)."""
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = os.environ | {"DAGSTER_HOME": str(home)}
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen([str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1",
                             "-p", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    missing = []
    with tempfile.TemporaryDirectory() as profile_dir:
        browser = None
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(f"{base}/server_info", proc)
            browser = Browser(Path(profile_dir))
            for asset in assets:
                shown = browser.pictures(f"{base}/assets/{asset}", out / f"{asset}.png")
                print(f"{asset}: {shown} inline picture(s) after [Show Markdown]; screenshot {out / (asset + '.png')}")
                if shown == 0:
                    missing.append(asset)
        finally:
            if browser is not None:
                browser.close()
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
