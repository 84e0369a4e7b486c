"""The viewer's WebSocket protocol: client messages in (JSON text), frames out (binary).

Client -> server, one JSON object per text message (at most MAX_MESSAGE_BYTES):

    {"type": "hover", "seq": 17, "panel": 0, "image": "chelsea", "layer": "_blocks.10",
     "x": 120.5, "y": 80.0, "metric": "cosine", "colormap": "fire",
     "stretch": "minmax" | [lo, hi], "channel": null | 12, "encoding": "rgba8" | "index8"}
        x, y: image pixel (original image coordinates). channel: null shows the similarity map
        to the cell under (x, y); an int shows that single channel's map (min-max stretched
        unless a fixed stretch is given). encoding: "rgba8" (default) sends the coloured map,
        "index8" one colour-map index per cell (a quarter of the bytes; the client applies the
        colour map's LUT from /api/state; LUT[index] is exactly the rgba8 colour). Latest wins per panel: a hover that
        arrives while
        an older one for the same panel waits replaces it, so stale positions are dropped.
    {"type": "vector", "seq": 18, "image": ..., "layer": ..., "x": ..., "y": ...}
        the raw feature vector at (x, y) (for pinning a pixel). Latest wins too.
    {"type": "layer", "seq": 19, "image": ..., "layer": ...}
        compute and cache a layer's features now; answered by a "layer_ready" JSON message.

Server -> client:
    binary frame = uint32 little-endian header length N, N bytes of UTF-8 JSON header, payload.
      "frame"  header {type, seq, panel, image, layer, metric, colormap, channel, cell: [row, col],
                       height, width, channels, lo, hi, server_ms, queued_ms, encoding, map_bytes,
                       vector_bytes}
               server_ms: computing the frame; queued_ms: waiting in the server before that.
               payload: map_bytes bytes of the map at feature resolution, row-major: RGBA8
                        (height*width*4) for "rgba8", uint8 colour-map indices (height*width)
                        for "index8"; then channels float32 LE: the raw feature vector at the cell.
      "vector" header {type, seq, image, layer, cell, channels, server_ms, vector_bytes}
               payload: channels float32 LE.
    text JSON  {"type": "layer_ready", "seq", "image", "layer", "height", "width", "channels", "server_ms"}
               {"type": "error", "seq": int | null, "message": "..."}: the connection stays open.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

MAX_MESSAGE_BYTES = 4096
MESSAGE_TYPES = ("hover", "vector", "layer")
ENCODINGS = ("rgba8", "index8")


class ProtocolError(ValueError):
    """A malformed or invalid client message; the text goes back to the client with its seq."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True)
class Request:
    """One validated client message. Fields a type does not use keep their defaults."""
    type: str
    seq: int
    image: str
    layer: str
    panel: int = 0
    x: float = 0.0
    y: float = 0.0
    metric: str = "cosine"
    colormap: str = "fire"
    stretch: str | tuple[float, float] = "minmax"
    channel: int | None = None
    encoding: str = "rgba8"

    @property
    def slot(self) -> tuple[str, int]:
        """Requests with the same slot replace each other while waiting (latest wins)."""
        return (self.type, self.panel)


def _field(msg: dict, name: str, kind, default=None, required: bool = False):
    if name not in msg:
        if required:
            raise ProtocolError(f"message is missing {name!r}")
        return default
    value = msg[name]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError(f"{name!r} must be a finite number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{name!r} must be an integer, got {value!r}")
        return value
    if not isinstance(value, kind):
        raise ProtocolError(f"{name!r} must be a {kind.__name__}, got {value!r}")
    return value


def parse_request(text: str | bytes) -> Request:
    """Validate one client message; raises ProtocolError naming the problem."""
    if isinstance(text, bytes):
        raise ProtocolError("binary messages are not accepted; send JSON text")
    if len(text.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc.msg}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    seq = msg.get("seq")
    try:
        return _parse_object(msg)
    except ProtocolError as exc:  # answer with the message's seq where it has a usable one
        exc.seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        raise


def _parse_object(msg: dict) -> Request:
    kind = msg.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_TYPES)}")
    seq = _field(msg, "seq", int, 0)
    image = _field(msg, "image", str, required=True)
    layer = _field(msg, "layer", str, required=True)
    if kind == "layer":
        return Request(kind, seq, image, layer)
    x = _field(msg, "x", float, required=True)
    y = _field(msg, "y", float, required=True)
    if kind == "vector":
        return Request(kind, seq, image, layer, x=x, y=y)
    panel = _field(msg, "panel", int, 0)
    if panel not in (0, 1):
        raise ProtocolError(f"'panel' must be 0 or 1, got {panel}")
    stretch = msg.get("stretch", "minmax")
    if stretch != "minmax":
        if (not isinstance(stretch, list) or len(stretch) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in stretch)
                or not stretch[0] < stretch[1]):
            raise ProtocolError(f"'stretch' must be \"minmax\" or [lo, hi] with lo < hi, got {stretch!r}")
        stretch = (float(stretch[0]), float(stretch[1]))
    channel = msg.get("channel")
    if channel is not None:
        channel = _field(msg, "channel", int)
    encoding = _field(msg, "encoding", str, "rgba8")
    if encoding not in ENCODINGS:
        raise ProtocolError(f"'encoding' must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    return Request(kind, seq, image, layer, panel=panel, x=x, y=y, metric=_field(msg, "metric", str, "cosine"),
                   colormap=_field(msg, "colormap", str, "fire"), stretch=stretch, channel=channel,
                   encoding=encoding)


def encode_binary(header: dict, *payloads: bytes) -> bytes:
    """uint32 LE header length + JSON header + payloads, as one binary WebSocket message."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(head)), head, *payloads])


def decode_binary(message: bytes) -> tuple[dict, bytes]:
    """Inverse of encode_binary (used by tests and benchmarks): (header, payload)."""
    (n,) = struct.unpack_from("<I", message, 0)
    return json.loads(message[4:4 + n]), message[4 + n:]
