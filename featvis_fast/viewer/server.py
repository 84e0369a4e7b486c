"""The viewer's HTTP + WebSocket server (FastAPI on uvicorn).

Security defaults: binds 127.0.0.1; every request (page, static file, API call, WebSocket)
must carry the per-run token (query `?token=`, header `X-Featvis-Token`, or the HttpOnly
SameSite=Strict cookie the page sets), compared in constant time; WebSockets from another
origin are refused; only the package's own static files are served; uploads and messages
have size limits. See protocol.py for the WebSocket messages.
"""
from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import io
import json
import logging
import secrets
import socket
import threading
import time
import warnings
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import anyio
from fastapi import FastAPI, HTTPException, WebSocket
from fastapi import Request as HttpRequest
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from .protocol import ProtocolError, Request, encode_binary, parse_request
from .session import ViewerSession

log = logging.getLogger("featvis_fast.viewer")
STATIC_DIR = importlib.resources.files("featvis_fast.viewer").joinpath("static")
COOKIE = "featvis_token"
MAX_UPLOAD_BYTES = 32 << 20
MAX_UPLOAD_PIXELS = 50_000_000
MAX_WS_BYTES = 64 << 10


class TokenGate:
    """ASGI middleware: refuse any HTTP request or WebSocket without the run's token."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token

    def _presented(self, scope) -> list[str]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        if "x-featvis-token" in headers:
            found.append(headers["x-featvis-token"])
        if "cookie" in headers:
            morsel = SimpleCookie(headers["cookie"]).get(COOKIE)
            if morsel is not None:
                found.append(morsel.value)
        return found

    def _same_origin(self, scope) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        return origin is None or urlsplit(origin).netloc == headers.get("host", "")

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        ok = any(hmac.compare_digest(t.encode(), self.token.encode()) for t in self._presented(scope))
        if scope["type"] == "websocket":
            if not (ok and self._same_origin(scope)):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
        elif not ok:
            response = Response("403: missing or wrong token; open the URL that `featvis serve` printed\n",
                                status_code=403, media_type="text/plain")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _decode_upload(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise HTTPException(413, f"image has {image.width}x{image.height} pixels; the limit is "
                                         f"{MAX_UPLOAD_PIXELS} pixels")
            image.load()
    except HTTPException:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(413, "image too large (decompression bomb guard)") from None
    except Exception as exc:
        raise HTTPException(400, f"not a readable image: {type(exc).__name__}") from None
    return image


def create_app(session: ViewerSession, token: str, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> TokenGate:
    """The viewer as an ASGI app (token-gated FastAPI)."""
    app = FastAPI(title="featvis viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/")
    def index() -> HTMLResponse:
        page = HTMLResponse(STATIC_DIR.joinpath("index.html").read_text())
        page.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return page

    @app.get("/api/state")
    def state() -> JSONResponse:
        return JSONResponse(session.state())

    @app.get("/api/images/{image_id}")
    def image(image_id: str) -> Response:
        try:
            return Response(session.image_png(image_id), media_type="image/png")
        except ProtocolError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/api/images", status_code=201)
    async def upload(request: HttpRequest, name: str = "upload") -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:
                raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
            chunks.append(chunk)
        if not size:
            raise HTTPException(400, "empty upload; send the image file as the request body")
        picture = _decode_upload(b"".join(chunks))
        try:
            entry = session.add_image(picture, name[:100])
        except ProtocolError as exc:
            raise HTTPException(409, str(exc)) from None
        return JSONResponse(entry.info(), status_code=201)

    @app.get("/api/heatmap.png")
    def heatmap(image: str, layer: str, x: float, y: float, metric: str = "cosine", colormap: str = "fire",
                channel: int | None = None, lo: float | None = None, hi: float | None = None,
                alpha: float = 0.6) -> Response:
        msg = {"type": "hover", "image": image, "layer": layer, "x": x, "y": y, "metric": metric,
               "colormap": colormap, "channel": channel, "stretch": "minmax" if lo is None or hi is None else [lo, hi]}
        try:
            return Response(session.heatmap_png(parse_request(json.dumps(msg)), alpha=alpha), media_type="image/png")
        except (ProtocolError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        await _serve_socket(ws, session)

    return TokenGate(app, token)


def _compute(session: ViewerSession, req: Request, received: float) -> str | bytes:
    if req.type == "hover":
        started = time.perf_counter()
        header, rgba, vector = session.frame(req)
        header["queued_ms"] = (started - received) * 1e3  # waited in the server before computing
        return encode_binary(header, rgba, vector)
    if req.type == "vector":
        header, vector = session.vector(req)
        return encode_binary(header, vector)
    return json.dumps(session.layer_ready(req))


async def _serve_socket(ws: WebSocket, session: ViewerSession) -> None:
    """Receive continuously; compute the newest request per slot (latest wins), one at a time."""
    pending: dict[tuple[str, int], tuple[Request, float]] = {}
    wake = asyncio.Event()
    send_lock = asyncio.Lock()

    async def send(message: str | bytes) -> None:
        async with send_lock:
            await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_text(message))

    async def error(seq, message: str) -> None:
        await send(json.dumps({"type": "error", "seq": seq, "message": message}))

    async def receiver() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            try:
                req = parse_request(msg["text"] if msg.get("text") is not None else (msg.get("bytes") or b""))
            except ProtocolError as exc:
                await error(exc.seq, str(exc))
                continue
            pending.pop(req.slot, None)  # re-insert: the newest request goes to the back
            pending[req.slot] = (req, time.perf_counter())
            wake.set()

    async def worker() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while pending:
                req, received = pending.pop(next(iter(pending)))
                try:
                    await send(await anyio.to_thread.run_sync(_compute, session, req, received))
                except ProtocolError as exc:
                    await error(req.seq, str(exc))
                except Exception as exc:  # keep serving: report, log, go on
                    log.exception("viewer request failed")
                    await error(req.seq, f"internal error: {type(exc).__name__}: {exc}")

    async with anyio.create_task_group() as group:
        group.start_soon(worker)
        try:
            await receiver()
        except WebSocketDisconnect:
            pass
        group.cancel_scope.cancel()

class ViewerServer:
    """uvicorn serving the viewer in a background thread (for `featvis serve`, tests, benchmarks)."""

    def __init__(self, session: ViewerSession, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None) -> None:
        import uvicorn

        self.token = token or secrets.token_urlsafe(24)
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        # no permessage-deflate: compressing a 1 MB RGBA frame costs ~60 ms, the whole latency budget
        config = uvicorn.Config(create_app(session, self.token), log_level="warning", ws_max_size=MAX_WS_BYTES,
                                ws_per_message_deflate=False)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def start(self) -> str:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the viewer server failed to start")
            threading.Event().wait(0.02)
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sock.close()

