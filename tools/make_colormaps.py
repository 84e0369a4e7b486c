"""Regenerate featvis_fast/data/colormaps.npz (256x4 uint8 RGBA lookup tables).

fire: ImageJ's "Fire" LUT (the colour map IFeaLiD uses), rebuilt from ImageJ's 32 control points
with ImageJ's own linear interpolation rule. viridis, magma: matplotlib's tables (CC0).
gray: identity ramp. Needs matplotlib (not a dependency of the package): `pip install matplotlib`.
"""
import pathlib

import numpy as np

FIRE_CONTROL = {
    "r": [0, 0, 1, 25, 49, 73, 98, 122, 146, 162, 173, 184, 195, 207, 217, 229, 240, 252,
          255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255],
    "g": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 14, 35, 57, 79, 101, 117, 133, 147, 161,
          175, 190, 205, 219, 234, 248, 255, 255, 255, 255],
    "b": [0, 61, 96, 130, 165, 192, 220, 227, 210, 181, 151, 122, 93, 64, 35, 5, 0, 0, 0,
          0, 0, 0, 0, 0, 0, 35, 98, 160, 223, 255, 255, 255],
}


def imagej_interpolate(control: list[int]) -> np.ndarray:
    n = len(control)
    out = np.empty(256, np.uint8)
    for i in range(256):
        pos = i * n / 256.0
        i1 = int(pos)
        i2 = min(i1 + 1, n - 1)
        frac = pos - i1
        out[i] = int((1 - frac) * control[i1] + frac * control[i2])
    return out


def main() -> None:
    from matplotlib import colormaps

    alpha = np.full(256, 255, np.uint8)
    fire = np.stack([imagej_interpolate(FIRE_CONTROL[c]) for c in "rgb"] + [alpha], 1)
    tables = {"fire": fire, "gray": np.stack([np.arange(256, dtype=np.uint8)] * 3 + [alpha], 1)}
    for name in ("viridis", "magma"):
        tables[name] = np.round(colormaps[name](np.arange(256) / 255.0) * 255).astype(np.uint8)
    out = pathlib.Path(__file__).resolve().parents[1] / "featvis_fast" / "data" / "colormaps.npz"
    np.savez_compressed(out, **tables)
    print("wrote", out)


if __name__ == "__main__":
    main()
