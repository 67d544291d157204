"""The station's page for the person at the line, served on 127.0.0.1 by ``smh-ml watch``.

``/`` shows the model version, throughput and latency, the counts per class and the last
decisions, newest first, each with its heat map (the capture as the model saw it, every patch
tinted by its defect probability, the deciding patch outlined); it reloads itself every two
seconds. ``/status.json`` is the station's status, ``/heatmap/<n>.png`` one decision's heat
map, drawn when first asked for (never on the deciding path, which stays at model speed).
Loopback only: the page shows file names and verdicts, so reaching it from elsewhere is a
reverse proxy's job, with its own authentication (docs/DEPLOY.md).
"""

from __future__ import annotations

import html
import json
import threading
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

SHOWN = 12
"""Decisions on the page."""
KEPT = 120
"""Decisions whose patches are kept for heat maps: several seconds at line speed, so a page
that reloads every two seconds still finds the ones it shows."""


class Recent:
    """The last decisions and their patches, shared by the station's thread and the page's."""

    def __init__(self, size: int = KEPT):
        self._items: deque[tuple[int, dict, np.ndarray | None, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._count = 0

    def add(self, row: dict, patches: np.ndarray | None, geometry: Any = None) -> None:
        """One decision, its patches and the geometry of the model that cut them (a reloaded
        model may cut another grid)."""
        with self._lock:
            self._count += 1
            self._items.appendleft((self._count, dict(row), patches, geometry))

    def items(self, limit: int | None = None) -> list[tuple[int, dict, np.ndarray | None, Any]]:
        with self._lock:
            return list(self._items)[:limit]


HeatMap = Callable[[dict, np.ndarray, Any], bytes]
"""Draws one decision's heat map as PNG bytes from its log row, patches and model geometry (the CLI passes the
one ``smh-ml predict --heatmap`` draws, smh_ml.evaluation.plots.decision_heatmap_png)."""


def render(status: dict, recent: list[tuple[int, dict, np.ndarray | None, Any]]) -> str:
    """The page's HTML (every value from files and the model escaped)."""
    esc = html.escape
    counts = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in status.get("counts", {}).items())
    cards = []
    for n, row, patches, _ in recent:
        verdict = (f"<b class='err'>error</b> {esc(str(row['error']))}" if "error" in row else
                   f"<b>{esc(row.get('verdict', row['label']))}</b>"
                   + (f" (nearest {esc(row['label'])}, unknown score {row['unknown_score']:.3f})"
                      if row.get("verdict") == "unknown" else "")
                   + f" p={row['probability']:.3f} · {row['latency_ms']:.0f} ms")
        picture = (f"<img src='/heatmap/{n}.png' alt='heat map of {esc(Path(row['path']).name)}'>"
                   if patches is not None and "error" not in row else "")
        cards.append(f"<div class='card' data-decision='{n}'><div>{esc(Path(row['path']).name)}</div>"
                     f"<div>{verdict}</div><div class='small'>{esc(row['decided_at'])} · "
                     f"{esc(str(row['model_version']))}</div>{picture}</div>")
    body = "".join(cards) or "<p id='none'>No capture decided yet.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>smh-ml station</title><style>
body{{font-family:sans-serif;margin:1em}} .card{{display:inline-block;vertical-align:top;margin:.4em;padding:.4em;
border:1px solid #ccc;width:330px}} .card img{{width:320px}} .small{{color:#666;font-size:80%}} .err{{color:#b00}}
table{{border-collapse:collapse}} td{{padding:0 .8em 0 0}}</style></head><body>
<h1>Line station</h1>
<p>model <b>{esc(str(status.get('model_version')))}</b> · {status.get('decided', 0)} decided ·
{status.get('errors', 0)} failed · {status.get('captures_per_second')} captures/s · latency p50
{status.get('latency_ms_p50')} ms, p99 {status.get('latency_ms_p99')} ms · {status.get('reloads', 0)} model
reload(s)</p><table><tr><th>class</th><th>captures</th></tr>{counts}</table>
<h2>Last decisions</h2>{body}</body></html>"""


class StatusPage:
    """Serves the page of ``status()`` and ``recent`` on ``127.0.0.1:port`` (0: a free port),
    heat maps drawn by ``draw``."""

    def __init__(self, status: Callable[[], dict], recent: Recent, draw: HeatMap, port: int = 0):
        lock = threading.Lock()  # matplotlib's pyplot is global state: one heat map at a time

        @lru_cache(maxsize=SHOWN * 4)
        def drawn(n: int) -> bytes:
            for m, row, patches, geometry in recent.items():
                if m == n and patches is not None:
                    with lock:
                        return draw(row, patches, geometry)
            raise KeyError(n)  # not cached: a miss is not remembered

        def heatmap(n: int) -> bytes | None:
            try:
                return drawn(n)
            except KeyError:
                return None

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the station prints its own lines
                pass

            def _send(self, code: int, kind: str, data: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", render(status(), recent.items(SHOWN)).encode())
                elif self.path == "/status.json":
                    self._send(200, "application/json", json.dumps(status()).encode())
                elif self.path.startswith("/heatmap/") and self.path.endswith(".png"):
                    number = self.path[len("/heatmap/"):-len(".png")]
                    png = heatmap(int(number)) if number.isdigit() else None
                    if png is None:
                        self._send(404, "text/plain", b"no such decision on the page\n")
                    else:
                        self._send(200, "image/png", png)
                else:
                    self._send(404, "text/plain", b"not found\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="status-page", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> StatusPage:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
