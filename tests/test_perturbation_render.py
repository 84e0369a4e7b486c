"""The README's occlusion / RISE figure script runs and draws non-blank maps."""
import importlib.util
import os

import numpy as np


def test_readme_figure_script(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "perturbation_figure.py")
    spec = importlib.util.spec_from_file_location("perturbation_figure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figure.png"
    figure = module.make_figure(str(out), size=48, masks=24)
    assert out.exists() and figure.width > 4 * 48 and figure.height > 2 * 48
    pixels = np.asarray(figure.convert("L"))
    assert pixels.std() > 10
