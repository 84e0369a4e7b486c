"""fv.invert (Mahendran & Vedaldi 2015, FeatureVis preset): the feature error of the sample photos'
reconstructions falls below a stated bound, the result is reproducible and in [0, 1], the fused
loop agrees with a plain autograd loop of the same objective, and bad input is named."""
import pytest
import torch
from _backprop_models import ReluOnlyNet

import featvis_fast as fv
from featvis_fast._ascent_reference import regularizer_values
from featvis_fast.models import IMAGENET_STD
from featvis_fast.reconstruction.invert import Inversion, featurevis_settings


def _photos(preprocess, size):
    return torch.cat([preprocess(fv.sample_image(s).convert("RGB").resize((size, size)), size=size)
                      for s in ("chelsea", "coffee")])


def test_inversion_of_the_sample_photos_reaches_a_small_feature_error():
    """Bound: ||phi(x) - t||^2 / ||t||^2 < 0.1 after 100 steps (and a tenth of the start's)."""
    model, preprocess = fv.load_model()
    x = _photos(preprocess, 64)
    run = Inversion(model, x, "_blocks.6")
    start = run.feature_error()
    run.run(100)
    error = run.feature_error()
    assert (error < 0.1).all() and (error < 0.1 * start).all(), (start.tolist(), error.tolist())
    images = run.images()
    assert images.shape == (2, 3, 64, 64) and images.min() >= 0 and images.max() <= 1


def test_the_fused_loop_matches_a_plain_autograd_loop():
    model = ReluOnlyNet()
    x = torch.randn(2, 3, 19, 21, generator=torch.Generator().manual_seed(0))
    settings = featurevis_settings(19, 21, lp=1e-6, tv=1e-3)
    run = Inversion(model, x, "layer.0", seed=2, settings=settings)
    u = run.ascent.x.clone().requires_grad_(True)
    with torch.no_grad():
        target = fv.models.extract(model, x, "layer.0")
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    momentum = torch.zeros_like(u)
    for _ in range(4):
        a = fv.models.extract(model, u / (255 * std), "layer.0", grad=True)
        loss = ((a - target) ** 2).flatten(1).sum(1) / (target ** 2).flatten(1).sum(1)
        (g,) = torch.autograd.grad(loss.sum(), u)
        g = g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
        (r,) = torch.autograd.grad(regularizer_values(u, settings.regularizers).sum(), u)
        momentum = 0.9 * momentum - (g + r)
        u = (u + 0.25 * momentum).detach().requires_grad_(True)
    run.run(4)
    assert torch.allclose(run.ascent.x, u.detach(), atol=1e-4, rtol=1e-4)
    assert (run.ascent.x - Inversion(model, x, "layer.0", seed=2).ascent.x).abs().max() > 0.1


def test_reproducible_by_seed():
    model = ReluOnlyNet()
    x = torch.randn(1, 3, 16, 16)
    a = fv.invert(model, x, "body.3", steps=3, seed=1, progress=False)
    b = fv.invert(model, x, "body.3", steps=3, seed=1, progress=False)
    c = fv.invert(model, x, "body.3", steps=3, seed=2, progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("x,layer,kwargs,match", [
    (torch.randn(1, 3, 16, 16), "nope", {}, "nope"),
    (torch.randn(3, 16, 16), "body.3", {}, r"\(N, 3, H, W\)"),
    (torch.full((1, 3, 16, 16), float("nan")), "body.3", {}, "NaN|finite"),
    (torch.randn(1, 3, 16, 16), "body.3", {"preset": "lucid"}, "preset"),
    (torch.randn(1, 3, 16, 16), "body.3", {"steps": 0}, "steps"),
])
def test_bad_input_is_named(x, layer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fv.invert(ReluOnlyNet(), x, layer, progress=False, **{"steps": 2, **kwargs})
