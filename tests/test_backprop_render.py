"""Rendering helpers for attributions, and the README figure script."""
import importlib.util
import os

import pytest
import torch

import featvis_fast as fv


def test_attribution_heatmap_is_featvis_display():
    a = torch.zeros(2, 3, 2, 2)
    a[0, :, 0, 0] = torch.tensor([3.0, -5.0, 4.0])   # negatives dropped: sqrt(9 + 16) = 5
    a[0, :, 1, 1] = torch.tensor([1.0, 0.0, 0.0])
    heat = fv.attribution_heatmap(a)
    assert heat.shape == (2, 2, 2)
    assert torch.allclose(heat[0], torch.tensor([[1.0, 0.0], [0.0, 0.2]]))
    assert torch.equal(heat[1], torch.zeros(2, 2)), "an all-zero attribution stays 0"
    assert torch.allclose(fv.attribution_heatmap(a[0]), heat[0])


def test_signed_map_keeps_the_sign():
    a = torch.zeros(1, 3, 1, 3)
    a[0, 0, 0] = torch.tensor([2.0, -4.0, 1.0])
    m = fv.signed_map(a)
    assert torch.allclose(m, torch.tensor([[[0.5, -1.0, 0.25]]]))
    rgba = fv.colorize(m[0], "bwr", stretch=(-1.0, 1.0))
    assert tuple(rgba[0, 1, :3].tolist()) == (0, 0, 255)  # -1 is blue
    lut = fv.colormap("bwr")
    assert tuple(lut[0, :3].tolist()) == (0, 0, 255) and tuple(lut[255, :3].tolist()) == (255, 0, 0)
    assert min(lut[127, :3].tolist()) >= 253  # white in the middle


def test_bad_attribution_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(C, H, W\)"):
        fv.attribution_heatmap(torch.zeros(4, 4))


def test_readme_figure_script(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "backprop_figure.py")
    spec = importlib.util.spec_from_file_location("backprop_figure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figure.png"
    figure = module.make_figure(str(out), size=64)
    assert out.exists() and figure.width > 6 * 64 and figure.height > 2 * 64
    # the guided-backprop panel is not blank
    import numpy as np

    pixels = np.asarray(figure.convert("L"))
    assert pixels.std() > 10
