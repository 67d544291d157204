"""Bounds of REST serving (``smh-ml serve``, smh_ml.tracking.serving).

MLflow's scoring server (``/invocations``, ``/ping``, ``/health``, ``/version``: what
``mlflow models serve`` answers) behind a body-size limit, in several uvicorn worker
processes. ``mlflow models serve`` reads any body whole before the model sees it (a 50 MB
request took the server from 416 to 717 MB) and decides one request at a time; here a body
above the limit is refused from its ``Content-Length`` before it is read, a POST without one
is refused (411) rather than read unbounded, and each worker decides its own requests. The
capture inside a request is bounded by the model card's pixel limit
(:data:`smh_ml.deploy.card.MAX_PIXELS_FACTOR`), checked from the image header before it is
decoded (smh_ml.data.captures.open_image).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

MAX_BODY_BYTES = 16 * 2**20
"""A request body above this is refused (413): base64 costs 4/3, so about 12 MB of image
files a request, several line-scan JPEGs."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request whose declared body exceeds ``max_bytes`` gets 413, a POST
    or PUT that declares no length gets 411, and a body that runs past its declared length is
    cut off; nothing of a refused body is read."""

    def __init__(self, app: Callable, max_bytes: int = MAX_BODY_BYTES):
        if max_bytes <= 0:
            raise ValueError(f"a body limit must be positive, got {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is None and scope.get("method") in ("POST", "PUT"):
            await _refuse(send, 411, "a request body needs a Content-Length header")
            return
        try:
            length = int(declared or 0)
        except ValueError:
            await _refuse(send, 400, "Content-Length is not a number")
            return
        if length > self.max_bytes:
            await _refuse(send, 413, f"request body of {length:,} bytes is over this server's limit of "
                                     f"{self.max_bytes:,} bytes; send fewer images a request")
            return
        received = 0

        async def bounded() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > length:  # more than declared: end the body there
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        await self.app(scope, bounded, send)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error_code": "INVALID_PARAMETER_VALUE" if status == 400 else "REQUEST_LIMIT_EXCEEDED",
                       "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
