"""Occlusion and RISE: Captum parity for the score, plain one-window-at-a-time loops for the
FeatureVis semantics (layer measures, overhanging windows, several specs, feature-map
occlusion), RISE against a plain loop over the same masks, and clear errors."""
import warnings

import pytest
import torch
from _backprop_models import ReluOnlyNet
from conftest import kernel_backends

import featvis_fast as fv
from featvis_fast import _perturbation_reference as pref
from featvis_fast.perturbation import _windows, random_masks

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture
def model():
    return ReluOnlyNet()


@pytest.fixture
def x():
    return torch.randn(3, 3, 15, 17, generator=torch.Generator().manual_seed(0))


def assert_close(a, b, tol=1e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert b.abs().max() > 0, "the expected map is all zero: the test would prove nothing"
    err = (a.double() - b.double()).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), f"max error {err:.3g}"


def _captum_occlusion(model, x, window, stride, baseline, target, per_channel=False):
    c = x.shape[1]
    shape = (1, *window) if per_channel else (c, *window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=shape, strides=(1, *stride),
                                                      baselines=baseline, target=target, perturbations_per_eval=7)


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_captum_parity_score(model, x, backend):
    target = torch.tensor([0, 3, 4])
    ours = fv.occlusion(model, x, target, window=(4, 5), stride=(3, 2), fill=0.5, backend=backend, progress=False)
    theirs = _captum_occlusion(model, x, (4, 5), (3, 2), 0.5, target)
    assert ours.shape == (3, 15, 17)
    assert torch.allclose(theirs[:, 0], theirs[:, 2])
    assert_close(ours, theirs[:, 0])


def test_captum_parity_per_channel_fill_and_per_channel_maps(model, x):
    fill = torch.tensor([0.2, -1.0, 0.7])
    ours = fv.occlusion(model, x, 2, window=(5, 5), stride=(5, 4), fill=fill, progress=False)
    theirs = _captum_occlusion(model, x, (5, 5), (5, 4), fill.view(1, 3, 1, 1), 2)
    assert_close(ours, theirs[:, 0])
    ours_c = fv.occlusion(model, x, 2, window=(3, 4), stride=(2, 3), per_channel=True, progress=False)
    theirs_c = _captum_occlusion(model, x, (3, 4), (2, 3), 0.0, 2, per_channel=True)
    assert ours_c.shape == x.shape
    assert_close(ours_c, theirs_c)


def test_batch_size_and_layout_do_not_change_results(model, x):
    a = fv.occlusion(model, x, 1, window=4, stride=3, batch_size=1, progress=False)
    b = fv.occlusion(model, x, 1, window=4, stride=3, batch_size=None, progress=False)
    c = fv.occlusion(model, x.contiguous(memory_format=torch.channels_last), 1, window=4, stride=3, batch_size=5,
                     progress=False)
    assert_close(b, a)
    assert_close(c, a)


def _plain_featurevis(model, x, layer, filt, window, stride, fill_value, positions="overhang"):
    """One forward per window: heat += ||A_f(x) - A_f(occluded)|| over the window's pixels."""
    acts = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    try:
        with torch.no_grad():
            model(x)
            ref = acts["a"][0, filt].clone()
            h, w = x.shape[-2:]
            spec = _windows.parse_specs(window, stride, h, w)[0]
            heat = torch.zeros(h, w, dtype=torch.float64)
            for y0, y1, x0, x1 in _windows.boxes_for(spec, h, w, positions).tolist():
                occluded = x.clone()
                occluded[0, :, y0:y1, x0:x1] = fill_value.view(-1, 1, 1)
                model(occluded)
                heat[y0:y1, x0:x1] += (ref - acts["a"][0, filt]).double().norm()
    finally:
        handle.remove()
    return heat


def test_featurevis_layer_measure_matches_a_plain_loop(model, x):
    one = x[:1]
    fill = -one.mean(dim=(2, 3))[0]
    ours = fv.occlusion(model, one, window=(5, 4), stride=(2, 3), fill="mean", measure=("body.3", 5),
                        positions="overhang", progress=False)
    expected = _plain_featurevis(model, one, "body.3", 5, (5, 4), (2, 3), fill)
    assert_close(ours[0], expected, 1e-5)


def test_default_filter_is_the_strongest(model, x):
    one = x[1:2]
    acts = {}
    h = model.body[3].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    with torch.no_grad():
        model(one)
    h.remove()
    strongest = int(acts["a"][0].pow(2).sum(dim=(1, 2)).argmax())
    auto = fv.occlusion(model, one, window=4, stride=2, measure="body.3", progress=False)
    explicit = fv.occlusion(model, one, window=4, stride=2, measure=("body.3", strongest), progress=False)
    assert_close(auto, explicit, 1e-6)


def test_several_specs_are_normalized_and_summed(model, x):
    one = x[2:3]
    specs = ([(5, 5), (3, 4)], [(2, 2), (3, 2)])
    ours = fv.occlusion(model, one, window=specs[0], stride=specs[1], fill=0.0, measure=("layer.0", 3),
                        positions="overhang", progress=False)
    zero = torch.zeros(3)
    maps = [_plain_featurevis(model, one, "layer.0", 3, w, s, zero) for w, s in zip(*specs)]
    total = sum(m / m.max() for m in maps)
    assert_close(ours[0], total / total.max(), 1e-5)


def test_stride_larger_than_window_leaves_uncovered_pixels_at_zero(model, x):
    ours = fv.occlusion(model, x, 1, window=(2, 3), stride=(5, 6), progress=False)
    covered = torch.zeros(15, 17, dtype=torch.bool)
    for y0, y1, x0, x1 in _windows.boxes_for(_windows.parse_specs((2, 3), (5, 6), 15, 17)[0], 15, 17,
                                              "inside").tolist():
        covered[y0:y1, x0:x1] = True
    assert not bool(covered.all())
    assert bool((ours[:, ~covered] == 0).all())
    with torch.no_grad():
        base = model(x)[:, 1]
        occluded = x.clone()
        occluded[:, :, 0:2, 0:3] = 0.0
        drop = base - model(occluded)[:, 1]
    assert torch.allclose(ours[:, 0, 0], drop, atol=1e-5)


def test_feature_map_occlusion_matches_a_plain_loop(model, x):
    one = x[:2]
    ours = fv.occlusion(model, one, torch.tensor([1, 4]), window=3, stride=2, layer="layer.0", progress=False)
    module = model.layer[0]
    with torch.no_grad():
        acts = {}
        h = module.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
        base = model(one)
        h.remove()
        a = acts["a"]
        hh, ww = a.shape[-2:]
        assert ours.shape == (2, hh, ww)
        spec = _windows.parse_specs(3, 2, hh, ww)[0]
        sums, counts = torch.zeros(2, hh, ww), torch.zeros(2, hh, ww)
        for y0, y1, x0, x1 in _windows.boxes_for(spec, hh, ww, "inside").tolist():
            occluded = a.clone()
            occluded[:, :, y0:y1, x0:x1] = 0.0
            h = module.register_forward_hook(lambda m, i, o, t=occluded: t)
            out = model(one)
            h.remove()
            drop = base[[0, 1], [1, 4]] - out[[0, 1], [1, 4]]
            sums[:, y0:y1, x0:x1] += drop[:, None, None]
            counts[:, y0:y1, x0:x1] += 1
    assert_close(ours, sums / counts)


def test_fills_blur_noise_and_mean(model, x):
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = fv.occlusion(model, x, 1, window=4, stride=3, fill="noise", generator=gen(), progress=False)
    b = fv.occlusion(model, x, 1, window=4, stride=3, fill="noise", generator=gen(), progress=False)
    assert_close(b, a, 1e-5)  # the same noise (the first call differs only in the rounding of
    # its un-rewritten forward; see featvis_fast.engine.rewrites)
    other = fv.occlusion(model, x, 1, window=4, stride=3, fill="noise", generator=torch.Generator().manual_seed(6),
                         progress=False)
    assert (other - a).abs().max() > 1e-3
    blurred = fv.occlusion(model, x, 1, window=4, stride=3, fill="blur", blur_sigma=2.0, progress=False)
    zero = fv.occlusion(model, x, 1, window=4, stride=3, fill=0.0, progress=False)
    assert not torch.allclose(blurred, zero)
    mean = fv.occlusion(model, x, 1, window=4, stride=3, fill="mean", progress=False)
    per_image = torch.stack([-x[i].mean(dim=(1, 2)) for i in range(3)])
    for i in range(3):
        one = fv.occlusion(model, x[i:i + 1], 1, window=4, stride=3, fill=per_image[i], progress=False)
        assert_close(mean[i:i + 1], one)


def _plain_rise(model, x, target, cells, shifts, p):
    h, w = x.shape[-2:]
    masks = pref.rise_masks(cells, shifts, h, w)
    sal = torch.zeros(x.shape[0], h, w, dtype=torch.float64)
    with torch.no_grad():
        for m in masks:
            probs = torch.softmax(model(x * m), dim=1)
            sal += probs[torch.arange(x.shape[0]), target].double()[:, None, None] * m.double()
    return sal / (len(masks) * p)


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_rise_matches_a_plain_loop_with_the_same_masks(model, x, backend):
    target = torch.tensor([2, 0, 4])
    ours = fv.rise(model, x, target, n_masks=40, grid=4, p=0.4, seed=3, batch_size=9, backend=backend,
                   progress=False)
    cells, shifts = random_masks(40, (4, 4), 0.4, 15, 17, torch.Generator().manual_seed(3))
    expected = _plain_rise(model, x, target, cells, shifts, 0.4)
    assert ours.shape == (3, 15, 17)
    assert_close(ours, expected, 1e-5)


def test_rise_default_target_and_reproducibility(model, x):
    a = fv.rise(model, x, n_masks=16, grid=3, seed=1, progress=False)
    b = fv.rise(model, x, n_masks=16, grid=3, seed=1, progress=False)
    c = fv.rise(model, x, n_masks=16, grid=3, seed=2, progress=False)
    assert_close(b, a, 1e-5)
    assert (c - a).abs().max() > 1e-3
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    assert_close(a, fv.rise(model, x, predicted, n_masks=16, grid=3, seed=1, progress=False))


@pytest.mark.parametrize("kwargs,match", [
    (dict(window=16), "larger than the image"),
    (dict(window=4, stride=0), "strides must be positive"),
    (dict(window=4, stride=(2, -1)), "strides must be positive"),
    (dict(window=4, measure="nope"), "nope"),
    (dict(window=4, layer="nope"), "nope"),
    (dict(window=4, fill="sparkles"), "fill must be"),
    (dict(window=4, fill=[1.0, 2.0]), "per-channel"),
    (dict(window=4, positions="corners"), "positions must be"),
    (dict(window=4, batch_size=0), "batch_size"),
    (dict(window=4, measure=("body.3", 99)), "out of range"),
])
def test_bad_occlusion_arguments_give_clear_errors(model, x, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fv.occlusion(model, x, None if "measure" in kwargs else 0, progress=False, **kwargs)


def test_bad_targets_and_inputs_give_clear_errors(model, x):
    with pytest.raises(ValueError, match="out of range"):
        fv.occlusion(model, x, 99, window=4, progress=False)
    with pytest.raises(ValueError, match="target applies"):
        fv.occlusion(model, x, 1, window=4, measure="body.3", progress=False)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fv.occlusion(model, bad, 1, window=4, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        fv.rise(model, x, 7, n_masks=4, progress=False)
    with pytest.raises(ValueError, match="n_masks"):
        fv.rise(model, x, n_masks=0)
    with pytest.raises(ValueError, match="p must be"):
        fv.rise(model, x, p=0.0)
    with pytest.raises(ValueError, match="finer than the image"):
        fv.rise(model, x, grid=16)


def test_model_is_left_unchanged(model, x):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fv.occlusion(model, x, 1, window=4, stride=3, measure="score", layer="layer.0", progress=False)
    fv.rise(model, x, 1, n_masks=8, progress=False)
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
