"""What the viewer serves: images, feature maps computed on demand and cached, and frames.

A session holds the loaded images (or precomputed feature maps), the model, and two bounded
LRU caches: raw feature maps per (image, layer) and prepared FeatureSimilarity caches per
(image, layer, metric). Every frame reads a prepared cache once through the fused kernels.
Thread-safe: the server computes in worker threads.
"""
from __future__ import annotations

import difflib
import io
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .. import _validate
from ..models import extract, layer_names
from ..render import COLORMAPS, INDEX_COLORMAP, colorize, colormap
from ..similarity import METRICS, FeatureSimilarity
from .protocol import ProtocolError, Request

FEATURES_LAYER = "features"  # the one layer of a precomputed feature map
_SUGGESTED = re.compile(r"^(_conv_stem|_blocks\.\d+|_conv_head|layer\d+|features\.\d+)$")


@dataclass
class ViewerImage:
    id: str
    name: str
    image: Image.Image
    features: torch.Tensor | None = None  # precomputed (C, h, w) map: the image's only layer

    def info(self) -> dict:
        return {"id": self.id, "name": self.name, "width": self.image.width, "height": self.image.height,
                "layers": [FEATURES_LAYER] if self.features is not None else None}


@dataclass
class _Cache:
    """LRU of tensors-holding entries bounded by total bytes."""
    max_bytes: int
    entries: OrderedDict = field(default_factory=OrderedDict)
    sizes: dict = field(default_factory=dict)

    def get(self, key):
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        return None

    def put(self, key, value, nbytes: int) -> None:
        self.entries[key] = value
        self.sizes[key] = nbytes
        while sum(self.sizes.values()) > self.max_bytes and len(self.entries) > 1:
            old, _ = self.entries.popitem(last=False)
            del self.sizes[old]

    def drop(self, match) -> None:
        for key in [k for k in self.entries if match(k)]:
            del self.entries[key], self.sizes[key]


class ViewerSession:
    """Images + model + caches. model=None serves precomputed feature maps only.

    input_size: longest image side fed to the model (images are resized to it, up or down, so
    small photos still give detailed maps; 0 keeps each image's own resolution). dtype: storage of the similarity caches
    (see FeatureSimilarity).
    """

    def __init__(self, model: torch.nn.Module | None = None, preprocess=None, layers: list[str] | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float16, backend: str | None = None,
                 input_size: int = 1024, cache_bytes: int = 2 << 30, max_images: int = 64) -> None:
        self.model, self.preprocess = model, preprocess
        self.device = torch.device(device)
        self.dtype, self.backend = dtype, backend
        self.input_size, self.max_images = int(input_size), int(max_images)
        self.all_layers = layer_names(model) if model is not None else []
        if layers:
            for name in layers:
                self._check_layer(name)
            self.layers = list(layers)
        else:
            self.layers = [n for n in self.all_layers if _SUGGESTED.match(n)] or self.all_layers
        self.images: OrderedDict[str, ViewerImage] = OrderedDict()
        self._features = _Cache(cache_bytes // 2)
        self._similarity = _Cache(cache_bytes // 2)
        self._lock = threading.RLock()

    # ---- images -----------------------------------------------------------------------------
    def _new_id(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "image"
        ident, k = base, 2
        while ident in self.images:
            ident, k = f"{base}-{k}", k + 1
        return ident

    def add_image(self, image: Image.Image, name: str) -> ViewerImage:
        """Register a photo; features are computed per layer when first asked for."""
        if self.model is None:
            raise ProtocolError("this viewer serves precomputed feature maps; it has no model to run on new images")
        return self._add(ViewerImage(self._new_id(name), name, image.convert("RGB")))

    def add_features(self, features: torch.Tensor, name: str, overlay: Image.Image | None = None) -> ViewerImage:
        """Register a precomputed (C, h, w) feature map; overlay is drawn under it (else gray)."""
        _validate.check_feature_map(features)
        _, h, w = features.shape
        image = overlay.convert("RGB") if overlay is not None else Image.new("RGB", (w, h), (128, 128, 128))
        return self._add(ViewerImage(self._new_id(name), name, image, features.detach().float().to(self.device)))

    def _add(self, entry: ViewerImage) -> ViewerImage:
        with self._lock:
            if len(self.images) >= self.max_images:
                raise ProtocolError(f"at most {self.max_images} images per session")
            self.images[entry.id] = entry
        return entry

    def image(self, image_id: str) -> ViewerImage:
        try:
            return self.images[image_id]
        except KeyError:
            raise ProtocolError(f"unknown image {image_id!r}; loaded: {', '.join(self.images) or 'none'}") from None

    def image_png(self, image_id: str) -> bytes:
        buf = io.BytesIO()
        self.image(image_id).image.save(buf, format="PNG")
        return buf.getvalue()

    def state(self) -> dict:
        """What the page needs to start: images, layers, metrics, colour maps, limits."""
        return {"images": [img.info() for img in self.images.values()], "layers": self.layers,
                "metrics": list(METRICS), "colormaps": {n: colormap(n).tolist() for n in COLORMAPS},
                "can_upload": self.model is not None, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", "")}

    # ---- features ---------------------------------------------------------------------------
    def _check_layer(self, layer: str) -> None:
        if layer not in self.all_layers:
            close = difflib.get_close_matches(layer, self.all_layers, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ProtocolError(f"unknown layer {layer!r}{hint}")

    def features(self, image_id: str, layer: str) -> torch.Tensor:
        """Raw (C, h, w) float32 feature map of a layer for an image (computed once, cached)."""
        entry = self.image(image_id)
        if entry.features is not None:
            if layer != FEATURES_LAYER:
                raise ProtocolError(f"image {image_id!r} is a precomputed feature map; its only layer is "
                                    f"{FEATURES_LAYER!r}, got {layer!r}")
            return entry.features
        self._check_layer(layer)
        with self._lock:
            cached = self._features.get((image_id, layer))
            if cached is not None:
                return cached
            x = self.preprocess(entry.image, size=self._input_hw(entry.image)).to(self.device)
            with torch.inference_mode():
                feats = extract(self.model, x, layer)[0].float().contiguous()
            if not torch.isfinite(feats).all():
                raise ProtocolError(f"layer {layer!r} produced non-finite features for {image_id!r}")
            self._features.put((image_id, layer), feats, feats.numel() * 4)
            return feats

    def _input_hw(self, image: Image.Image) -> tuple[int, int] | None:
        """Model input size: the longest side scaled to input_size (up or down), at least 32 px."""
        w, h = image.size
        if self.input_size <= 0:
            return None if min(w, h) >= 32 else (max(h, 32), max(w, 32))
        s = self.input_size / max(w, h)
        return max(32, round(h * s)), max(32, round(w * s))

    def similarity(self, image_id: str, layer: str, metric: str) -> FeatureSimilarity:
        if metric not in METRICS:
            raise ProtocolError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        with self._lock:
            cached = self._similarity.get((image_id, layer, metric))
            if cached is not None:
                return cached
            feats = self.features(image_id, layer)
            dtype = torch.float32 if metric == "euclidean" and self.dtype == torch.int8 else self.dtype
            sim = FeatureSimilarity(feats, metric=metric, dtype=dtype, backend=self.backend)
            nbytes = sim.cache.numel() * sim.cache.element_size()
            self._similarity.put((image_id, layer, metric), sim, nbytes)
            return sim

    def warm_up(self) -> None:
        """Load the kernels now (a first frame would otherwise pay seconds of extension loading)."""
        probe = FeatureSimilarity(torch.ones(2, 2, 2, device=self.device), dtype=self.dtype, backend=self.backend)
        probe.render((0, 0))
        colorize(torch.zeros(2, 2, device=self.device), backend=self.backend)

    # ---- requests ---------------------------------------------------------------------------
    def _cell(self, req: Request, feats: torch.Tensor) -> tuple[int, int]:
        entry = self.image(req.image)
        w, h = entry.image.size
        if not (0 <= req.x < w and 0 <= req.y < h):
            raise ProtocolError(f"pixel (x={req.x}, y={req.y}) lies outside the {w}x{h} image {req.image!r}")
        return min(int(req.y * feats.shape[1] / h), feats.shape[1] - 1), min(int(req.x * feats.shape[2] / w),
                                                                             feats.shape[2] - 1)

    def frame(self, req: Request) -> tuple[dict, bytes, bytes]:
        """A hover: (header, map at feature resolution (RGBA8, or uint8 indices for index8), float32 vector)."""
        t0 = time.perf_counter()
        if req.colormap not in COLORMAPS:
            raise ProtocolError(f"unknown colormap {req.colormap!r}; choose one of {', '.join(COLORMAPS)}")
        index = req.encoding == "index8"
        lut_name = INDEX_COLORMAP if index else req.colormap
        with self._lock:
            feats = self.features(req.image, req.layer)
            row, col = self._cell(req, feats)
            if req.channel is None:
                sim = self.similarity(req.image, req.layer, req.metric)
                try:
                    rgba, lo, hi = sim.render((row, col), colormap=lut_name, stretch=req.stretch, return_range=True)
                except ValueError as exc:
                    raise ProtocolError(str(exc)) from None
                lo, hi = float(lo), float(hi)
            else:
                if not 0 <= req.channel < feats.shape[0]:
                    raise ProtocolError(f"channel {req.channel} out of range: layer {req.layer!r} has "
                                        f"{feats.shape[0]} channels")
                values = feats[req.channel]
                lo, hi = ((float(values.min()), float(values.max())) if req.stretch == "minmax" else req.stretch)
                rgba = colorize(values, lut_name, req.stretch, self.backend)
            vector = feats[:, row, col].cpu().numpy().astype("<f4")
            map_bytes = (rgba[..., 0] if index else rgba).contiguous().cpu().numpy().tobytes()
        header = {"type": "frame", "seq": req.seq, "panel": req.panel, "image": req.image, "layer": req.layer,
                  "metric": req.metric, "colormap": req.colormap, "channel": req.channel, "cell": [row, col],
                  "height": int(feats.shape[1]), "width": int(feats.shape[2]), "channels": int(feats.shape[0]),
                  "lo": lo, "hi": hi, "server_ms": (time.perf_counter() - t0) * 1e3, "encoding": req.encoding,
                  "map_bytes": len(map_bytes), "vector_bytes": vector.nbytes}
        return header, map_bytes, vector.tobytes()

    def vector(self, req: Request) -> tuple[dict, bytes]:
        t0 = time.perf_counter()
        with self._lock:
            feats = self.features(req.image, req.layer)
            row, col = self._cell(req, feats)
            vector = feats[:, row, col].cpu().numpy().astype("<f4")
        return ({"type": "vector", "seq": req.seq, "image": req.image, "layer": req.layer, "cell": [row, col],
                 "channels": int(vector.size), "server_ms": (time.perf_counter() - t0) * 1e3,
                 "vector_bytes": vector.nbytes}, vector.tobytes())

    def layer_ready(self, req: Request) -> dict:
        t0 = time.perf_counter()
        feats = self.features(req.image, req.layer)
        return {"type": "layer_ready", "seq": req.seq, "image": req.image, "layer": req.layer,
                "channels": int(feats.shape[0]), "height": int(feats.shape[1]), "width": int(feats.shape[2]),
                "server_ms": (time.perf_counter() - t0) * 1e3}

    def heatmap_png(self, req: Request, alpha: float = 0.6) -> bytes:
        """The current view at image resolution (heat map blended over the image) as PNG."""
        from ..render import overlay
        header, rgba, _ = self.frame(req)
        heat = np.frombuffer(rgba, np.uint8).reshape(header["height"], header["width"], 4)
        buf = io.BytesIO()
        overlay(self.image(req.image).image, heat, alpha=alpha).save(buf, format="PNG")
        return buf.getvalue()
