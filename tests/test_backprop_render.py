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


@pytest.mark.parametrize("shape,outlier_perc", [((2, 3, 7, 5), 2.0), ((3, 1, 224, 224), 2.0), ((1, 3, 13, 1), 10.0),
                                                ((2, 3, 1, 1), 2.0), ((1, 3, 16, 16), 0.0)])
def test_clipped_heatmap_is_captums_default_display(shape, outlier_perc):
    from captum.attr._utils.visualization import _normalize_attr

    a = torch.randn(shape, dtype=torch.float64) ** 3  # heavy tails: a few pixels dominate
    heat = fv.clipped_heatmap(a.transpose(2, 3).contiguous().transpose(2, 3), outlier_perc)  # non-contiguous
    assert heat.shape == (shape[0], *shape[2:]) and heat.dtype == torch.float32
    for b in range(shape[0]):
        ref = _normalize_attr(a[b].permute(1, 2, 0).numpy().sum(axis=2), "absolute_value", outlier_perc)
        assert torch.allclose(heat[b].double(), torch.from_numpy(ref), rtol=0, atol=1e-6)
    assert torch.equal(fv.clipped_heatmap(a[0], outlier_perc), heat[0])
    if outlier_perc > 0 and shape[2] * shape[3] > 100:
        combined = a.sum(dim=1).abs()
        by_max = (combined / combined.amax(dim=(1, 2), keepdim=True)).float()
        assert (heat >= by_max - 1e-6).all() and heat.mean() > by_max.mean()


def test_clipped_heatmap_edges():
    assert torch.equal(fv.clipped_heatmap(torch.zeros(2, 3, 4, 4)), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="outlier_perc must be in"):
        fv.clipped_heatmap(torch.ones(3, 2, 2), 100)
    with pytest.raises(ValueError, match="attribution must be"):
        fv.clipped_heatmap(torch.ones(2, 2))


def test_the_demo_shows_saliency_clipped_by_default_and_featvis_on_request():
    import numpy as np

    from featvis_fast import demo_panels

    model, preprocess = fv.load_model()
    tiles = {}
    for display in ("clipped", "featvis"):
        panel = np.asarray(demo_panels.attributions(model, preprocess, ["chelsea"], "cpu", display).convert("L"),
                           dtype=np.float32)
        tiles[display] = panel[20:240, 234:454]  # the saliency tile, inside its cell
    assert tiles["clipped"].mean() > 2 * tiles["featvis"].mean()
    with pytest.raises(ValueError, match="display must be one of"):
        demo_panels.attributions(model, preprocess, ["chelsea"], "cpu", "max")


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


def test_attribution_figure_script(tmp_path):
    """examples/attribution_figure.py: every method's panel, none of them blank."""
    import numpy as np

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "attribution_figure.py")
    spec = importlib.util.spec_from_file_location("attribution_figure", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figure.png"
    figure = module.make_figure(str(out), size=64, samples=2)
    assert out.exists() and figure.width > 17 * 64 and figure.height > 2 * 64
    cells = np.asarray(figure.convert("L"), dtype=np.float32)
    pitch = figure.width / 17  # cells and their gaps
    for column in range(1, 17):
        left = int(column * pitch)
        tile = cells[24:60, left + 8:left + 56]  # inside the first row's cell, below the label
        assert tile.std() > 1, f"panel {column} is blank"


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
