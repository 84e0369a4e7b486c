"""Feature-map files: (H, W, C) arrays in .npy / .npz, and IFeaLiD's ZIP format read and written as it is.

IFeaLiD's ZIP (its resources/scripts/dataset-zip-creator.py):

    metadata.json  {"name", "width": W, "height": H, "features": C, "precision": 8 | 16 | 32, "overlay": bool}
    0.png, 1.png, ...  RGBA PNGs of size W x H holding the channels' codes
    overlay.jpg    grayscale JPEG shown under the map (only read when "overlay" is true)

The values are globally min-max normalized to codes round((x - min) / (max - min) * (2^p - 1)). The
channels are zero-padded to a multiple of 32 / p and packed 32 / p per PNG: precision 8 puts four
uint8 channels into R, G, B, A; 16 puts two uint16 channels, each as two little-endian bytes; 32
puts one uint32 channel as four little-endian bytes. The original min and max are not stored, so
a ZIP loads as codes / (2^p - 1) in [0, 1]: the values IFeaLiD itself computes its similarity on
(its shaders read the 8-bit codes as normalized texture values).

Files are read from memory only (nothing is extracted to disk), and everything that could blow up
is bounded by `max_bytes`: the ZIP's declared uncompressed size, the decoded PNG and overlay pixels,
and the float32 feature map. Member names other than the expected ones are rejected.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._validate import check_feature_map
from ..models import extract

DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB
PRECISIONS = (8, 16, 32)
SUFFIXES = (".npy", ".npz", ".zip")
_METADATA_MAX_BYTES = 1 << 16
_PNG_MODES = ("RGBA", "RGB", "LA", "L", "P", "1")  # read as a browser does: a missing alpha is 255
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class LoadedFeatures:
    """A feature map read from a file: `features` (C, h, w) float32, its name, an optional overlay."""

    features: torch.Tensor
    name: str
    overlay: Image.Image | None = None
    precision: int | None = None  # bits per code of an IFeaLiD ZIP; None for .npy / .npz


def channels_per_png(precision: int) -> int:
    """How many channels one RGBA PNG of an IFeaLiD ZIP holds at this precision."""
    return 32 // _check_precision(precision)


def png_count(channels: int, precision: int) -> int:
    """How many PNGs an IFeaLiD ZIP with `channels` channels has (the last one zero-padded)."""
    return math.ceil(channels / channels_per_png(precision))


def quantize(features: torch.Tensor, precision: int = 8) -> np.ndarray:
    """(C, h, w) features -> (h, w, C) little-endian codes, normalized with the global min and max.

    Computed in float64; a constant map (max == min) gives all-zero codes (IFeaLiD's script divides
    by zero there).
    """
    precision = _check_precision(precision)
    x = check_feature_map(features).detach().to("cpu", torch.float64).numpy().transpose(1, 2, 0)
    lo, hi = float(x.min()), float(x.max())
    dtype = np.dtype(f"<u{precision // 8}")
    if hi == lo:
        return np.zeros(x.shape, dtype)
    return np.round((x - lo) / (hi - lo) * float(2**precision - 1)).astype(dtype)


def encode_pngs(codes: np.ndarray, precision: int) -> list[np.ndarray]:
    """(H, W, C) codes -> the (H, W, 4) uint8 RGBA arrays of 0.png, 1.png, ..."""
    k = channels_per_png(precision)
    h, w, c = codes.shape
    n = png_count(c, precision)
    padded = np.zeros((h, w, n * k), np.dtype(f"<u{precision // 8}"))
    padded[:, :, :c] = codes
    packed = padded.reshape(h, w, n, k).view(np.uint8)  # (H, W, n, 4): each code's bytes, little-endian
    return [np.ascontiguousarray(packed[:, :, i]) for i in range(n)]


def decode_pngs(rgba: list[np.ndarray], channels: int, precision: int) -> np.ndarray:
    """The (H, W, 4) uint8 arrays of 0.png, 1.png, ... -> (H, W, channels) codes (padding dropped)."""
    packed = np.ascontiguousarray(np.stack(rgba, axis=2))  # (H, W, n, 4)
    codes = packed.view(np.dtype(f"<u{precision // 8}"))  # (H, W, n, 32 / p)
    return codes.reshape(*codes.shape[:2], -1)[:, :, :channels]


def write_ifealid_zip(features: torch.Tensor, path: str | os.PathLike, name: str, precision: int = 8,
                      overlay: Image.Image | None = None) -> dict:
    """Write a (C, h, w) feature map as an IFeaLiD ZIP; returns the metadata written.

    The overlay (any size; IFeaLiD shows it under the map at the map's extent) is stored as a
    grayscale JPEG of quality 85. The file appears complete or not at all.
    """
    precision = _check_precision(precision)
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if overlay is not None and not isinstance(overlay, Image.Image):
        raise TypeError(f"overlay must be a PIL image or None, got {type(overlay).__name__}")
    codes = quantize(features, precision)
    h, w, c = codes.shape
    metadata = {"name": name, "width": w, "height": h, "features": c, "precision": precision,
                "overlay": overlay is not None}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored, as IFeaLiD's script writes it
        if overlay is not None:
            zf.writestr("overlay.jpg", _image_bytes(overlay.convert("L"), "JPEG", quality=85))
        for i, rgba in enumerate(encode_pngs(codes, precision)):
            zf.writestr(f"{i}.png", _image_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
        zf.writestr("metadata.json", json.dumps(metadata))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buf.getbuffer())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return metadata


def read_ifealid_zip(file, max_bytes: int = DEFAULT_MAX_BYTES, label: str = "ZIP"
                     ) -> tuple[np.ndarray, dict, Image.Image | None]:
    """Read an IFeaLiD ZIP (path or binary file object) -> ((H, W, C) codes, metadata, overlay or None)."""
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{label}: not a readable ZIP file ({exc})") from None
    with zf:
        infos = {}
        for info in zf.infolist():
            if info.filename in infos:
                raise ValueError(f"{label}: member {info.filename!r} appears more than once")
            infos[info.filename] = info
        if "metadata.json" not in infos:
            raise ValueError(f"{label}: missing metadata.json (not an IFeaLiD ZIP?)")
        total = sum(info.file_size for info in infos.values())
        if total > max_bytes:
            raise ValueError(f"{label}: uncompressed size {total} bytes exceeds the limit of {max_bytes} bytes")
        meta = _parse_metadata(_read_member(zf, infos["metadata.json"], _METADATA_MAX_BYTES, label), label)
        w, h, c, p = meta["width"], meta["height"], meta["features"], meta["precision"]
        n = png_count(c, p)
        pngs = [f"{i}.png" for i in range(n)]
        unexpected = sorted(set(infos) - {"metadata.json", "overlay.jpg", *pngs})
        if unexpected:
            raise ValueError(f"{label}: unexpected members {_some(unexpected)}; an IFeaLiD ZIP with {c} channels "
                             f"at precision {p} holds metadata.json, overlay.jpg and 0.png..{n - 1}.png")
        missing = [name for name in pngs if name not in infos]
        if missing:
            raise ValueError(f"{label}: missing channel PNGs {_some(missing)} ({c} channels at precision {p} "
                             f"need {n} PNGs)")
        if meta["overlay"] and "overlay.jpg" not in infos:
            raise ValueError(f"{label}: metadata.json says overlay is true but overlay.jpg is missing")
        decoded = w * h * 4 * n + w * h * c * 4  # the PNGs' pixels and the float32 map
        if decoded > max_bytes:
            raise ValueError(f"{label}: a {w}x{h} map with {c} channels decodes to {decoded} bytes, over the "
                             f"limit of {max_bytes} bytes")
        rgba = [_read_png(_read_member(zf, infos[name], max_bytes, label), name, w, h, label) for name in pngs]
        overlay = None
        if meta["overlay"]:
            overlay = _read_overlay(_read_member(zf, infos["overlay.jpg"], max_bytes, label),
                                    max_bytes - decoded, label)
    return decode_pngs(rgba, c, p), meta, overlay


def load_feature_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedFeatures:
    """Load a feature map from .npy / .npz ((H, W, C), as IFeaLiD takes them) or an IFeaLiD .zip.

    .npz: its first array. .zip: codes / (2^precision - 1) in [0, 1] (see the module docstring),
    the name from metadata.json and the overlay when there is one.
    """
    path = Path(path)
    suffix = _check_suffix(path.name)
    if not path.is_file():
        raise ValueError(f"no such feature file: {str(path)!r}")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path.name}: file size {path.stat().st_size} bytes exceeds the limit of {max_bytes} bytes")
    with open(path, "rb") as fh:
        return _load(fh, suffix, path.name, max_bytes)


def load_feature_bytes(data: bytes, filename: str, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedFeatures:
    """`load_feature_file` for a file's content in memory (an upload); `filename` gives its type and name."""
    suffix = _check_suffix(filename)
    if len(data) > max_bytes:
        raise ValueError(f"{filename}: size {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    return _load(io.BytesIO(data), suffix, filename, max_bytes)


def export_ifealid(model: torch.nn.Module, preprocess, image: Image.Image, layer: str, out: str | os.PathLike,
                   name: str, precision: int = 8, size: int | None = 224, device: str = "cpu") -> dict:
    """Features of `image` at `layer` as an IFeaLiD ZIP, with the image (grayscale, resized to the map's
    width x height, the extent IFeaLiD shows it at) as overlay. Returns the metadata written."""
    _check_precision(precision)
    feats = extract(model, preprocess(image, size=size).to(device), layer)[0].cpu()
    overlay = image.resize((feats.shape[2], feats.shape[1]), Image.BILINEAR)
    return write_ifealid_zip(feats, out, name, precision, overlay)


def _load(fh, suffix: str, filename: str, max_bytes: int) -> LoadedFeatures:
    stem = Path(filename).stem
    if suffix == ".zip":
        codes, meta, overlay = read_ifealid_zip(fh, max_bytes, filename)
        scale = float(2 ** meta["precision"] - 1)
        values = np.ascontiguousarray((codes / scale).astype(np.float32).transpose(2, 0, 1))
        return LoadedFeatures(torch.from_numpy(values), meta["name"] or stem, overlay, meta["precision"])
    if suffix == ".npz":
        array = _read_npz_first(fh, max_bytes, filename)
    else:
        array = _read_npy(fh, max_bytes, filename)
    return LoadedFeatures(_hwc_to_tensor(array, filename), stem)


def _read_npz_first(fh, max_bytes: int, label: str) -> np.ndarray:
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{label}: not a readable .npz file ({exc})") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise ValueError(f"{label}: the .npz file holds no arrays")
        first = infos[0]
        if not first.filename.endswith(".npy"):
            raise ValueError(f"{label}: the first member {first.filename!r} is not a .npy array")
        if first.file_size > max_bytes:
            raise ValueError(f"{label}: array {first.filename!r} is {first.file_size} bytes uncompressed, over the "
                             f"limit of {max_bytes} bytes")
        try:
            with zf.open(first) as member:
                return _read_npy(io.BytesIO(member.read(first.file_size)), max_bytes, f"{label}:{first.filename}")
        except _ZIP_ERRORS as exc:
            raise ValueError(f"{label}: cannot read {first.filename!r} ({exc})") from None


def _read_npy(fh, max_bytes: int, label: str) -> np.ndarray:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise ValueError(f"{label}: not a readable .npy array ({exc})") from None
    if dtype.kind not in "iuf":
        raise ValueError(f"{label}: features must be integer or floating point, got dtype {dtype}")
    nbytes = math.prod(shape) * max(dtype.itemsize, 4)
    if nbytes > max_bytes:
        raise ValueError(f"{label}: a {shape} array takes {nbytes} bytes, over the limit of {max_bytes} bytes")
    fh.seek(0)
    try:
        return fmt.read_array(fh, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{label}: cannot read the array ({exc})") from None


def _hwc_to_tensor(array: np.ndarray, label: str) -> torch.Tensor:
    if array.ndim != 3:
        raise ValueError(f"{label}: features must have shape (H, W, C), got {array.shape} ({array.ndim} dims)")
    if array.size == 0:
        raise ValueError(f"{label}: features are empty: shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{label}: features contain non-finite values ({int(np.isnan(array).sum())} NaN, "
                         f"{int(np.isinf(array).sum())} Inf)")
    with np.errstate(over="ignore"):
        values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"{label}: features exceed the float32 range (largest magnitude {np.abs(array).max():g})")
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, label: str) -> bytes:
    if info.file_size > limit:
        raise ValueError(f"{label}: {info.filename} is {info.file_size} bytes, over the limit of {limit} bytes")
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
    except _ZIP_ERRORS as exc:
        raise ValueError(f"{label}: cannot read {info.filename} ({exc})") from None
    if len(data) != info.file_size:
        raise ValueError(f"{label}: {info.filename} holds {len(data)} bytes, its header says {info.file_size}")
    return data


def _parse_metadata(raw: bytes, label: str) -> dict:
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{label}: metadata.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{label}: metadata.json must hold a JSON object, got {type(meta).__name__}")
    for key in ("width", "height", "features", "precision"):
        if key not in meta:
            raise ValueError(f"{label}: metadata.json lacks {key!r}")
        value = meta[key]
        if type(value) is not int or value < 1:
            raise ValueError(f"{label}: metadata.json {key!r} must be a positive integer, got {value!r}")
    if meta["precision"] not in PRECISIONS:
        raise ValueError(f"{label}: metadata.json has bad precision {meta['precision']!r}; IFeaLiD uses 8, 16 or 32")
    name, overlay = meta.get("name", ""), meta.get("overlay", False)
    if not isinstance(name, str):
        raise ValueError(f"{label}: metadata.json 'name' must be a string, got {name!r}")
    if not isinstance(overlay, bool):
        raise ValueError(f"{label}: metadata.json 'overlay' must be true or false, got {overlay!r}")
    return {"name": name, "width": meta["width"], "height": meta["height"], "features": meta["features"],
            "precision": meta["precision"], "overlay": overlay}


def _open_image(data: bytes, member: str, label: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"{label}: {member} is not a readable image ({exc})") from None


def _read_png(data: bytes, member: str, width: int, height: int, label: str) -> np.ndarray:
    im = _open_image(data, member, label)
    if im.format != "PNG":
        raise ValueError(f"{label}: {member} is a {im.format} image, not a PNG")
    if im.size != (width, height):
        raise ValueError(f"{label}: {member} is {im.width}x{im.height}, metadata.json says {width}x{height}")
    if im.mode not in _PNG_MODES:
        raise ValueError(f"{label}: {member} has mode {im.mode}; channel PNGs are 8-bit RGBA")
    try:
        return np.asarray(im.convert("RGBA"))
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{label}: cannot decode {member} ({exc})") from None


def _read_overlay(data: bytes, budget: int, label: str) -> Image.Image:
    im = _open_image(data, "overlay.jpg", label)
    if im.width * im.height * 4 > budget:
        raise ValueError(f"{label}: overlay.jpg is {im.width}x{im.height}, over the size limit")
    try:
        return im.convert("L")
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{label}: cannot decode overlay.jpg ({exc})") from None


def _image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _check_precision(precision: object) -> int:
    if type(precision) is not int or precision not in PRECISIONS:
        raise ValueError(f"bad precision {precision!r}; choose one of 8, 16, 32 (bits per value)")
    return precision


def _check_suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{filename}: unsupported feature file type {suffix or '(none)'!r}; "
                         f"use .npy or .npz ((H, W, C) arrays) or an IFeaLiD .zip")
    return suffix


def _some(names: list[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
