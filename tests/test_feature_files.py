"""Feature-map files: .npy / .npz (H, W, C) arrays and IFeaLiD's ZIP format, read and written; the CLI export.

The oracles here are independent of the code under test: codes are recomputed in float64 with
numpy, channel PNGs are unpacked byte by byte, and the IFeaLiD ZIPs read are built by hand with
zipfile + Pillow.
"""
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import featvis_fast as fv
from featvis_fast.cli import main
from featvis_fast.viewer.feature_files import (
    LoadedFeatures,
    load_feature_bytes,
    load_feature_file,
    read_ifealid_zip,
    write_ifealid_zip,
)

SHAPES = [(1, 7, 5), (5, 11, 3), (7, 3, 13), (13, 5, 7)]  # (C, h, w): C = 1 and primes, h and w primes


def reference_codes(features: torch.Tensor, precision: int) -> np.ndarray:
    """(C, h, w) -> (h, w, C) int64 codes: round((x - min) / (max - min) * (2^p - 1)) in float64."""
    x = features.numpy().astype(np.float64)
    lo, hi = x.min(), x.max()
    return np.round((x - lo) / (hi - lo) * (2.0**precision - 1)).astype(np.int64).transpose(1, 2, 0)


def unpack_png(rgba: np.ndarray, precision: int) -> np.ndarray:
    """One channel PNG's (H, W, 4) bytes -> its (H, W, 32 / p) codes, byte by byte (little-endian)."""
    b = rgba.astype(np.int64)
    if precision == 8:
        return b
    if precision == 16:
        return np.stack([b[..., 0] + 256 * b[..., 1], b[..., 2] + 256 * b[..., 3]], axis=-1)
    return (b[..., 0] + (b[..., 1] << 8) + (b[..., 2] << 16) + (b[..., 3] << 24))[..., None]


def random_features(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 3.0 + 1.5


@pytest.mark.parametrize("precision", [8, 16, 32])
@pytest.mark.parametrize("shape", SHAPES)
def test_write_then_read_gives_the_exact_codes(tmp_path, shape, precision):
    feats = random_features(shape, seed=sum(shape) * precision)
    c, h, w = shape
    ref = reference_codes(feats, precision)
    assert ref.min() == 0 and ref.max() == 2**precision - 1
    path = tmp_path / "f.zip"
    meta = write_ifealid_zip(feats, path, "odd map", precision=precision)
    assert meta == {"name": "odd map", "width": w, "height": h, "features": c, "precision": precision,
                    "overlay": False}

    # the file, read independently: member names in IFeaLiD's order, RGBA PNGs, little-endian packing
    per_png = 32 // precision
    n = -(-c // per_png)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == [f"{i}.png" for i in range(n)] + ["metadata.json"]
        assert json.loads(zf.read("metadata.json")) == meta
        unpacked = []
        for i in range(n):
            im = Image.open(io.BytesIO(zf.read(f"{i}.png")))
            assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (w, h))
            unpacked.append(unpack_png(np.asarray(im), precision))
    unpacked = np.concatenate(unpacked, axis=-1)
    assert unpacked.shape == (h, w, n * per_png)
    assert np.array_equal(unpacked[..., :c], ref)
    assert not unpacked[..., c:].any(), "padding channels must be zero"

    codes, meta_read, overlay = read_ifealid_zip(path)
    assert codes.shape == (h, w, c)
    assert np.array_equal(codes.astype(np.int64), ref)
    assert meta_read == meta and overlay is None

    loaded = load_feature_file(path)
    assert isinstance(loaded, LoadedFeatures)
    assert (loaded.name, loaded.overlay, loaded.precision) == ("odd map", None, precision)
    assert loaded.features.dtype == torch.float32 and loaded.features.shape == (c, h, w)
    expected = (ref.transpose(2, 0, 1) / (2.0**precision - 1)).astype(np.float32)
    assert np.array_equal(loaded.features.numpy(), expected)
    assert float(loaded.features.min()) == 0.0 and float(loaded.features.max()) == 1.0


def test_overlay_is_a_grayscale_jpeg_and_round_trips(tmp_path):
    feats = random_features((3, 9, 11), seed=1)
    ramp = np.add.outer(np.arange(9) * 20, np.arange(11) * 10).astype(np.uint8)
    rgb = Image.fromarray(np.stack([ramp, ramp // 2, 255 - ramp], axis=-1), "RGB")
    path = tmp_path / "o.zip"
    assert write_ifealid_zip(feats, path, "with overlay", overlay=rgb)["overlay"] is True
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[0] == "overlay.jpg"
        im = Image.open(io.BytesIO(zf.read("overlay.jpg")))
        assert (im.format, im.mode, im.size) == ("JPEG", "L", (11, 9))
    loaded = load_feature_file(path)
    assert loaded.overlay.mode == "L" and loaded.overlay.size == (11, 9)
    diff = np.abs(np.asarray(loaded.overlay, dtype=int) - np.asarray(rgb.convert("L"), dtype=int))
    assert diff.mean() < 6, diff.mean()


def test_a_constant_map_writes_zero_codes(tmp_path):
    write_ifealid_zip(torch.full((6, 3, 2), 4.25), tmp_path / "c.zip", "flat", precision=16)
    codes, _, _ = read_ifealid_zip(tmp_path / "c.zip")
    assert codes.shape == (3, 2, 6) and not codes.any()


def test_npy_and_npz_are_read_as_hwc(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7, 3))  # (H, W, C), float64
    b = rng.standard_normal((2, 2, 2))
    np.save(tmp_path / "map.npy", a)
    np.savez(tmp_path / "maps.npz", first=a, second=b)
    np.savez_compressed(tmp_path / "packed.npz", a.astype(np.float16))
    expected = torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32))
    for path, name, want in [(tmp_path / "map.npy", "map", expected), (tmp_path / "maps.npz", "maps", expected),
                             (tmp_path / "packed.npz", "packed",
                              torch.from_numpy(a.astype(np.float16).transpose(2, 0, 1).astype(np.float32)))]:
        loaded = load_feature_file(path)
        assert loaded.features.shape == (3, 5, 7) and loaded.features.dtype == torch.float32
        assert torch.equal(loaded.features, want), path.name
        assert (loaded.name, loaded.overlay, loaded.precision) == (name, None, None)
        from_bytes = load_feature_bytes(path.read_bytes(), path.name)
        assert torch.equal(from_bytes.features, want) and from_bytes.name == name
    ints = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "ints.npy", ints)
    assert torch.equal(load_feature_file(tmp_path / "ints.npy").features[:, 1, 2],
                       torch.tensor([20.0, 21.0, 22.0, 23.0]))  # pixel (1, 2) holds channels 20..23


def hand_built_zip(codes: np.ndarray, precision: int, overlay: Image.Image | None = None,
                   name: str = "hand made") -> bytes:
    """An IFeaLiD ZIP built here from (H, W, C) codes with byte arithmetic, as IFeaLiD's script lays it out."""
    h, w, c = codes.shape
    per_png = 32 // precision
    n = -(-c // per_png)
    padded = np.zeros((h, w, n * per_png), np.int64)
    padded[..., :c] = codes
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if overlay is not None:
            jpg = io.BytesIO()
            overlay.convert("L").save(jpg, format="jpeg", quality=85)
            zf.writestr("overlay.jpg", jpg.getvalue())
        for i in range(n):
            group = padded[..., i * per_png:(i + 1) * per_png]
            nbytes = precision // 8
            rgba = np.stack([(group[..., k // nbytes] >> (8 * (k % nbytes))) & 0xFF for k in range(4)], axis=-1)
            png = io.BytesIO()
            Image.fromarray(rgba.astype(np.uint8), "RGBA").save(png, format="png")
            zf.writestr(f"{i}.png", png.getvalue())
        zf.writestr("metadata.json", json.dumps({"name": name, "width": w, "height": h, "features": c,
                                                 "precision": precision, "overlay": overlay is not None}))
    return buf.getvalue()


@pytest.mark.parametrize("precision", [8, 16, 32])
def test_a_hand_built_ifealid_zip_is_read(tmp_path, precision):
    h, w, c = 3, 5, 7
    rng = np.random.default_rng(precision)
    codes = rng.integers(0, 2**precision, size=(h, w, c), dtype=np.int64)
    codes[0, 0, 0], codes[2, 4, 6] = 2**precision - 1, 0  # the extreme codes, in first and last channel
    overlay = Image.fromarray(np.arange(w * h, dtype=np.uint8).reshape(h, w) * 15, "L")
    path = tmp_path / "layer.npz.8.zip"
    path.write_bytes(hand_built_zip(codes, precision, overlay))
    loaded = load_feature_file(path)
    assert loaded.name == "hand made" and loaded.precision == precision
    assert loaded.features.shape == (c, h, w)
    expected = (codes.transpose(2, 0, 1) / (2.0**precision - 1)).astype(np.float32)
    assert np.array_equal(loaded.features.numpy(), expected)
    assert loaded.overlay.size == (w, h)
    assert np.abs(np.asarray(loaded.overlay, dtype=int) - np.asarray(overlay, dtype=int)).mean() < 8
    assert np.array_equal(read_ifealid_zip(path)[0].astype(np.int64), codes)


def test_png_modes_read_as_a_browser_does(tmp_path):
    rgb = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)  # an optimizer may drop an all-opaque alpha
    data = replace_member(hand_built_zip(np.zeros((1, 2, 4), np.int64), 8), "0.png", png_bytes(rgb, "RGB"))
    loaded = load_feature_bytes(data, "opt.zip")
    assert loaded.features[:, 0, 1].tolist() == pytest.approx([40 / 255, 50 / 255, 60 / 255, 1.0])


# --- helpers to break a valid ZIP -------------------------------------------------------------------------


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="png")
    return buf.getvalue()


def rebuild(data: bytes, edit) -> bytes:
    """A copy of a ZIP whose members (name -> bytes, in order) went through edit(dict) -> dict."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members = edit(members)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names, on purpose
        for name, content in (members.items() if isinstance(members, dict) else members):
            zf.writestr(name, content)
    return buf.getvalue()


def replace_member(data: bytes, name: str, content: bytes) -> bytes:
    return rebuild(data, lambda m: {**m, name: content})


def with_metadata(data: bytes, **changes) -> bytes:
    def edit(m):
        meta = json.loads(m["metadata.json"])
        meta.update(changes)
        meta = {k: v for k, v in meta.items() if v is not DROP}
        return {**m, "metadata.json": json.dumps(meta).encode()}
    return rebuild(data, edit)


DROP = object()
VALID = hand_built_zip(np.arange(2 * 3 * 5, dtype=np.int64).reshape(2, 3, 5), 8)  # (H, W, C) = (2, 3, 5): 2 PNGs


def _jpeg_named_png():
    buf = io.BytesIO()
    Image.new("RGB", (3, 2)).save(buf, format="jpeg")
    return buf.getvalue()


ZIP_ERRORS = {
    "not a zip": (b"PK\x03\x04 this is no zip", "not a readable ZIP file"),
    "no metadata": (rebuild(VALID, lambda m: {k: v for k, v in m.items() if k != "metadata.json"}),
                    "missing metadata.json"),
    "bad json": (replace_member(VALID, "metadata.json", b"{width: 3"), "metadata.json is not valid JSON"),
    "json list": (replace_member(VALID, "metadata.json", b"[3, 2]"), "must hold a JSON object"),
    "no features key": (with_metadata(VALID, features=DROP), "metadata.json lacks 'features'"),
    "width a string": (with_metadata(VALID, width="3"), "'width' must be a positive integer, got '3'"),
    "height zero": (with_metadata(VALID, height=0), "'height' must be a positive integer, got 0"),
    "features bool": (with_metadata(VALID, features=True), "'features' must be a positive integer, got True"),
    "precision 12": (with_metadata(VALID, precision=12), "bad precision 12"),
    "name not str": (with_metadata(VALID, name=5), "'name' must be a string"),
    "overlay not bool": (with_metadata(VALID, overlay="yes"), "'overlay' must be true or false"),
    "missing png": (rebuild(VALID, lambda m: {k: v for k, v in m.items() if k != "1.png"}),
                    "missing channel PNGs 1.png (5 channels at precision 8 need 2 PNGs)"),
    "too few channels": (with_metadata(VALID, features=4), "unexpected members 1.png"),
    "too many channels": (with_metadata(VALID, features=9), "missing channel PNGs 2.png"),
    "precision mismatch": (with_metadata(VALID, precision=16), "missing channel PNGs 2.png"),
    "path traversal": (replace_member(VALID, "../../evil.png", b"x"), "unexpected members ../../evil.png"),
    "directory": (replace_member(VALID, "features/", b""), "unexpected members features/"),
    "duplicate": (rebuild(VALID, lambda m: list(m.items()) + [("0.png", m["0.png"])]),
                  "member '0.png' appears more than once"),
    "png size": (replace_member(VALID, "1.png", png_bytes(np.zeros((3, 2, 4), np.uint8))),
                 "1.png is 2x3, metadata.json says 3x2"),
    "jpeg as png": (replace_member(VALID, "0.png", _jpeg_named_png()), "0.png is a JPEG image, not a PNG"),
    "garbage png": (replace_member(VALID, "0.png", b"\x89PNG garbage"), "0.png is not a readable image"),
    "16-bit png": (replace_member(VALID, "0.png", png_bytes(np.zeros((2, 3), np.uint16))),
                   "0.png has mode I;16"),
    "overlay missing": (with_metadata(VALID, overlay=True), "overlay is true but overlay.jpg is missing"),
    "decoded too large": (with_metadata(VALID, width=50000, height=50000),
                          "a 50000x50000 map with 5 channels decodes to"),
}


@pytest.mark.parametrize("case", list(ZIP_ERRORS))
def test_ifealid_zip_errors(tmp_path, case):
    data, message = ZIP_ERRORS[case]
    with pytest.raises(ValueError) as info:
        load_feature_bytes(data, "bad.zip")
    assert message in str(info.value) and "bad.zip" in str(info.value)
    path = tmp_path / "bad.zip"
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        load_feature_file(path)
    assert message in str(info.value)


def test_the_valid_zip_behind_the_error_cases_loads():
    loaded = load_feature_bytes(VALID, "ok.zip")
    assert torch.equal(loaded.features[:, 1, 2], torch.arange(25, 30, dtype=torch.float32) / 255)


def test_zip_bomb_is_refused_before_decompressing():
    bomb = replace_member(VALID, "overlay.jpg", bytes(64 << 20))  # 64 MiB of zeros, deflated to ~64 KiB
    assert len(bomb) < 1 << 20
    with pytest.raises(ValueError, match=r"uncompressed size \d+ bytes exceeds the limit of 16777216 bytes"):
        load_feature_bytes(bomb, "bomb.zip", max_bytes=16 << 20)
    with zipfile.ZipFile(io.BytesIO(VALID)) as zf:
        total = sum(info.file_size for info in zf.infolist())
    with pytest.raises(ValueError, match=f"uncompressed size {total} bytes exceeds the limit of {total - 1} bytes"):
        read_ifealid_zip(io.BytesIO(VALID), max_bytes=total - 1)


def test_a_corrupt_member_is_reported():
    stored = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(VALID)) as src, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    data = bytearray(stored.getvalue())
    at = data.index(b"IDAT") + 6  # inside 0.png's compressed pixels: the CRC-32 no longer matches
    data[at] ^= 0xFF
    with pytest.raises(ValueError, match="cannot read 0.png"):
        load_feature_bytes(bytes(data), "corrupt.zip")


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz_bytes(*arrays, compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, *arrays)
    return buf.getvalue()


ARRAY_ERRORS = {
    "2 dims": ("f.npy", npy_bytes(np.zeros((4, 4))), "must have shape (H, W, C), got (4, 4) (2 dims)"),
    "4 dims": ("f.npz", npz_bytes(np.zeros((1, 2, 2, 3))), "must have shape (H, W, C), got (1, 2, 2, 3)"),
    "empty": ("f.npy", npy_bytes(np.zeros((0, 3, 2))), "features are empty: shape (0, 3, 2)"),
    "nan": ("f.npy", npy_bytes(np.array([[[1.0, np.nan, np.nan]]])), "non-finite values (2 NaN, 0 Inf)"),
    "inf": ("f.npz", npz_bytes(np.array([[[np.inf], [-np.inf], [0.0]]])), "non-finite values (0 NaN, 2 Inf)"),
    "float32 overflow": ("f.npy", npy_bytes(np.full((1, 1, 2), 1e300)), "exceed the float32 range"),
    "bool": ("f.npy", npy_bytes(np.ones((2, 2, 2), bool)), "integer or floating point, got dtype bool"),
    "complex": ("f.npy", npy_bytes(np.ones((2, 2, 2), np.complex64)), "got dtype complex64"),
    "object": ("f.npy", npy_bytes(np.array([[[None]]], object), allow_pickle=True), "got dtype object"),
    "not npy": ("f.npy", b"\x93NUMPY nonsense", "not a readable .npy array"),
    "truncated npy": ("f.npy", npy_bytes(np.zeros((8, 8, 8)))[:300], "cannot read the array"),
    "empty npz": ("f.npz", npz_bytes(), "the .npz file holds no arrays"),
    "npz not zip": ("f.npz", b"not a zip at all", "not a readable .npz file"),
    "suffix": ("f.txt", b"", "unsupported feature file type '.txt'"),
    "no suffix": ("features", b"", "unsupported feature file type '(none)'"),
    "png": ("f.png", png_bytes(np.zeros((2, 2, 4), np.uint8)), "unsupported feature file type '.png'"),
}


@pytest.mark.parametrize("case", list(ARRAY_ERRORS))
def test_array_file_errors(tmp_path, case):
    filename, data, message = ARRAY_ERRORS[case]
    with pytest.raises(ValueError) as info:
        load_feature_bytes(data, filename)
    assert message in str(info.value)
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        load_feature_file(path)
    assert message in str(info.value) and filename in str(info.value)


def test_size_limits_for_arrays(tmp_path):
    data = npy_bytes(np.zeros((10, 10, 10), np.uint8))  # 1000 bytes as uint8, 4000 as float32
    with pytest.raises(ValueError, match=r"takes 4000 bytes, over the limit of 2000 bytes"):
        load_feature_bytes(data, "u8.npy", max_bytes=2000)
    assert load_feature_bytes(data, "u8.npy", max_bytes=4000).features.shape == (10, 10, 10)
    with pytest.raises(ValueError, match=r"size \d+ bytes exceeds the limit of 100 bytes"):
        load_feature_bytes(data, "u8.npy", max_bytes=100)
    (tmp_path / "u8.npy").write_bytes(data)
    with pytest.raises(ValueError, match=r"file size \d+ bytes exceeds the limit of 100 bytes"):
        load_feature_file(tmp_path / "u8.npy", max_bytes=100)
    packed = npz_bytes(np.zeros((256, 256, 16)), compressed=True)  # 8 MiB of zeros, a few KiB packed
    assert len(packed) < 100_000
    with pytest.raises(ValueError, match=r"is 8388736 bytes uncompressed, over the limit of 1000000 bytes"):
        load_feature_bytes(packed, "z.npz", max_bytes=1_000_000)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such feature file"):
        load_feature_file(tmp_path / "absent.npz")


@pytest.mark.parametrize("kwargs,exc,message", [
    ({"features": torch.zeros(4, 4)}, ValueError, "must have shape (C, h, w), got (4, 4)"),
    ({"features": torch.zeros(0, 3, 3)}, ValueError, "is empty"),
    ({"features": torch.tensor([[[1.0, float("nan")]]])}, ValueError, "non-finite values (1 NaN, 0 Inf)"),
    ({"features": torch.tensor([[[1.0, float("inf")]]])}, ValueError, "non-finite values (0 NaN, 1 Inf)"),
    ({"features": torch.ones(2, 2, 2, dtype=torch.int32)}, TypeError, "floating-point"),
    ({"features": np.ones((2, 2, 2))}, TypeError, "must be a torch.Tensor"),
    ({"precision": 12}, ValueError, "bad precision 12"),
    ({"precision": True}, ValueError, "bad precision True"),
    ({"precision": 8.0}, ValueError, "bad precision 8.0"),
    ({"name": None}, TypeError, "name must be a str"),
    ({"overlay": np.zeros((2, 2))}, TypeError, "overlay must be a PIL image"),
])
def test_writer_errors_leave_no_file(tmp_path, kwargs, exc, message):
    args = {"features": torch.ones(2, 3, 3), "path": tmp_path / "out.zip", "name": "x", **kwargs}
    with pytest.raises(exc) as info:
        write_ifealid_zip(**args)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --- the CLI ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_preprocess():
    return fv.load_model()


@pytest.mark.parametrize("argv,layer,precision,size,name", [
    ([], "_blocks.10", 8, 224, "chelsea _blocks.10"),
    (["--precision", "16", "--size", "160", "--name", "cat"], "_blocks.5", 16, 160, "cat"),
    (["--precision", "32"], "_blocks.3", 32, 224, "chelsea _blocks.3"),
])
def test_export_ifealid_command(tmp_path, capsys, model_and_preprocess, argv, layer, precision, size, name):
    out = tmp_path / "chelsea.zip"
    assert main(["export-ifealid", "chelsea", "--layer", layer, "--out", str(out)] + argv) == 0
    model, preprocess = model_and_preprocess
    image = fv.sample_image("chelsea")
    feats = fv.extract(model, preprocess(image, size=size), layer)[0]
    c, h, w = feats.shape
    assert f"wrote {out} ({c} channels, {w}x{h}, {precision}-bit)" in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        meta = json.loads(zf.read("metadata.json"))
        n_png = sum(name.endswith(".png") for name in zf.namelist())
    assert meta == {"name": name, "width": w, "height": h, "features": c, "precision": precision, "overlay": True}
    assert n_png == -(-c // (32 // precision))
    loaded = load_feature_file(out)
    assert loaded.features.shape == feats.shape and loaded.name == name
    ref = reference_codes(feats, precision).transpose(2, 0, 1)
    assert np.array_equal(loaded.features.numpy(), (ref / (2.0**precision - 1)).astype(np.float32))
    assert loaded.overlay.size == (w, h) and loaded.overlay.mode == "L"
    small = np.asarray(image.resize((w, h), Image.BILINEAR).convert("L"), dtype=int)
    assert np.abs(np.asarray(loaded.overlay, dtype=int) - small).mean() < 12


def test_export_ifealid_command_errors(tmp_path, capsys):
    out = tmp_path / "x.zip"
    assert main(["export-ifealid", "chelsea", "--layer", "_blocks.99", "--out", str(out)]) == 2
    assert "unknown layer name '_blocks.99'" in capsys.readouterr().err
    assert main(["export-ifealid", "no-such.png", "--layer", "_blocks.3", "--out", str(out)]) == 2
    assert "neither an image file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-ifealid", "chelsea", "--layer", "_blocks.3", "--out", str(out), "--precision", "12"])
    assert "invalid choice: 12" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
