"""The README's reconstruction figure script runs and draws images that are not blank."""
import importlib.util
import os

import numpy as np


def _module():
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "reconstruction_figure.py")
    spec = importlib.util.spec_from_file_location("reconstruction_figure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figure_script(tmp_path):
    module = _module()
    maxi = module.maximize_figure(str(tmp_path / "maximize.png"), size=32, steps=3, channels=(3, 12))
    inv = module.invert_figure(str(tmp_path / "invert.png"), size=32, steps=3, layers=("_blocks.2",))
    agnostic = module.class_agnostic_figure(str(tmp_path / "ca.png"), size=32, steps=3, clusters=2, layer="_blocks.6")
    assert all((tmp_path / f).exists() for f in ("maximize.png", "invert.png", "ca.png"))
    assert maxi.width >= 32 and inv.width >= 2 * 32 and agnostic.width >= 2 * 32 and agnostic.height >= 2 * 32
    for figure in (maxi, inv, agnostic):
        assert np.asarray(figure.convert("L"), dtype=np.float32).std() > 5
