"""Class-agnostic feature visualization (Stergiou, ICIP 2021): facets (PCA, t-SNE, k-means,
softmax(1/d) weights, weighted GAP targets), the loss (Barron's rho), the Stergiou preset's
schedules, the TV denoise and the centre mask, the whole run on the default model, checkpoints."""
import math

import pytest
import torch
import torch.nn.functional as F

from featvis_fast.images import sample_image, sample_images
from featvis_fast.models import extract, load_model
from featvis_fast.reconstruction._ascent import Ascent, StepSettings
from featvis_fast.reconstruction._filters import centre_distance, centre_mask, tv_denoise
from featvis_fast.reconstruction.class_agnostic import (
    ClassAgnostic,
    StergiouPreset,
    barron_rho,
    class_agnostic,
    default_penalty,
    linear,
)

SMALL = dict(size=64, clusters=3, per_cluster=3, top_channels=10, pca=8)
LAYER = "_blocks.10"


@pytest.fixture(scope="module")
def model():
    return load_model()[0]


@pytest.fixture(scope="module")
def photos():
    """(12, 3, 64, 64): three crops (one flipped) of each sample photo, normalized."""
    _, preprocess = load_model()
    crops = []
    for name in sample_images():
        big = preprocess(sample_image(name), size=96)
        crops += [big[..., :64, :64], big[..., 32:, 32:], big[..., 16:80, 16:80].flip(-1)]
    return torch.cat(crops)


def test_the_stergiou_preset_raises_every_clusters_objective(model, photos):
    result = class_agnostic(model, photos, LAYER, steps=20, progress=False, **SMALL)
    assert result.images.shape == result.start_images.shape == (3, 3, 64, 64)
    assert 0 <= float(result.images.min()) and float(result.images.max()) <= 1
    assert bool((result.scores > result.start_scores).all()), (result.start_scores, result.scores)
    assert result.labels.shape == (12,) and set(result.labels.tolist()) == {0, 1, 2}
    assert all(1 <= len(m) <= 3 for m in result.members)
    assert result.channels.shape == (3, 10) and result.targets.shape[0] == 3


def test_facets_are_deterministic_by_seed(model, photos):
    from sklearn.cluster import KMeans

    a, b = (ClassAgnostic(model, photos, LAYER, 5, seed=4, **SMALL) for _ in range(2))
    assert torch.equal(a.facets.embedding, b.facets.embedding) and torch.equal(a.facets.labels, b.facets.labels)
    assert all(torch.equal(m, n) for m, n in zip(a.facets.members, b.facets.members))
    assert torch.equal(a.initial, b.initial) and torch.equal(a.targets, b.targets)
    direct = KMeans(n_clusters=3, random_state=4, n_init=10).fit(a.facets.embedding.numpy())
    assert a.facets.labels.tolist() == direct.labels_.tolist()


def test_members_are_the_nearest_and_weighted_softmax_of_inverse_distance(model, photos):
    f = ClassAgnostic(model, photos, LAYER, 5, **SMALL).facets
    for k, (members, d, w) in enumerate(zip(f.members, f.distances, f.weights)):
        assert f.labels[members].eq(k).all()
        direct = torch.linalg.vector_norm(f.embedding[members] - f.centres[k], dim=1)
        assert torch.allclose(d, direct, rtol=1e-12) and bool((d[1:] >= d[:-1]).all())
        rest = torch.tensor([i for i in torch.nonzero(f.labels == k).flatten().tolist() if i not in members.tolist()])
        if rest.numel():
            assert torch.linalg.vector_norm(f.embedding[rest] - f.centres[k], dim=1).min() >= d.max()
        assert abs(float(w.sum()) - 1) < 1e-12
        expected = torch.exp(1 / direct) / torch.exp(1 / direct).sum()
        assert torch.allclose(w, expected, rtol=1e-12)


def test_targets_start_images_and_channels_are_the_weighted_blends(model, photos):
    run = ClassAgnostic(model, photos, LAYER, 5, **{**SMALL, "size": 48})
    x = F.interpolate(photos, size=(48, 48), mode="bilinear", align_corners=False, antialias=True)
    gap = extract(model, x, LAYER).mean(dim=(2, 3))
    for k, (members, w) in enumerate(zip(run.facets.members, run.facets.weights)):
        w = w.float()
        assert torch.allclose(run.targets[k], (w[:, None] * gap[members]).sum(0), rtol=1e-4, atol=1e-5)
        start = (w[:, None, None, None] * x[members]).sum(0)
        assert torch.allclose(run.initial[k], torch.maximum(torch.minimum(start, run.hi[0]), run.lo[0]), atol=1e-5)
        assert set(run.channels[k].tolist()) == set(torch.topk(run.targets[k], 10).indices.tolist())


def test_barron_rho_matches_its_closed_forms():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert torch.allclose(barron_rho(x), torch.sqrt(x * x + 1) - 1, rtol=1e-12, atol=1e-15)
    assert torch.allclose(barron_rho(x, 1.0, 2.0), torch.sqrt((x / 2) ** 2 + 1) - 1, rtol=1e-12, atol=1e-15)
    assert torch.allclose(barron_rho(x, 2.0 - 1e-7), x * x / 2, rtol=1e-5)
    assert torch.allclose(barron_rho(x, 1e-7), torch.log1p(x * x / 2), rtol=1e-5, atol=1e-9)
    assert float(barron_rho(torch.tensor(0.0))) == 0.0


def test_the_schedules_interpolate_linearly_from_the_first_to_the_last_step():
    p = StergiouPreset()
    first, last, middle = p.at(1, 2001), p.at(2001, 2001), p.at(1001, 2001)
    assert (first.lr, first.blur_sigma, first.denoise_weight, first.penalty_weight, first.mask_sigma) == \
        (0.5, 0.9, 2.0, 1e-4, 420.0)
    assert (last.lr, last.blur_sigma, last.denoise_weight, last.penalty_weight, last.mask_sigma) == \
        pytest.approx((0.08, 0.2, 8.0, 5e-4, 340.0), rel=1e-12)
    assert middle.lr == pytest.approx((0.5 + 0.08) / 2) and middle.denoise_weight == pytest.approx(5.0)
    assert p.at(3000, 2001) == last and linear(3.0, 7.0, 1, 1) == 3.0
    assert linear(0.0, 1.0, 3, 5) == pytest.approx(0.5)


def test_a_run_follows_the_schedules(model, photos):
    run = ClassAgnostic(model, photos, LAYER, 4, **SMALL)
    run.run(1)
    assert run.ascent.settings.optimizer == "nesterov" and run.ascent.settings.lr == 0.5
    assert run.goal.lam == pytest.approx(1e-4)
    run.run(3)
    assert run.ascent.settings.lr == pytest.approx(0.08) and run.goal.lam == pytest.approx(5e-4)


def test_the_image_changes_only_where_the_mask_reaches(model, photos):
    run = ClassAgnostic(model, photos, LAYER, 12, **SMALL)
    run.run(12)  # past a blur and a denoise, before the first brightness step
    corner = run.ascent.x[..., 0, 0]  # the farthest pixel from the centre: mask exactly 0
    assert float(run.mask[0, 0, 0, 0]) == 0.0
    assert torch.allclose(corner, run.initial[..., 0, 0], atol=1e-5)
    assert not torch.allclose(run.ascent.x[..., 32, 32], run.initial[..., 32, 32], atol=1e-3)


@pytest.mark.parametrize("reset", [False, True])
def test_momentum_carries_over_unless_reset_as_in_the_reference(model, photos, reset):
    run = ClassAgnostic(model, photos, LAYER, 5, preset=StergiouPreset(reset_momentum=reset), **SMALL)
    run.run(1)
    run._set_step(2)
    _, direction = run.gradient(run.ascent.crop)  # step 2's gradient
    run.run(1)
    assert torch.allclose(run.ascent.m, direction, rtol=1e-5, atol=1e-7) == reset


def test_a_restored_state_continues_exactly(model, photos):
    preset = StergiouPreset(filter_every=3, brightness_every=6)  # blur, denoise and brightness inside 8 steps
    make = lambda: ClassAgnostic(model, photos, LAYER, 8, preset=preset, **SMALL)  # noqa: E731
    whole = make()
    whole.run(8)
    first = make()
    first.run(4)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    resumed.run(4)
    assert resumed.step == 8 and torch.equal(resumed.images(), whole.images())
    assert torch.equal(resumed.scores, whole.scores) and resumed.goal.lam == whole.goal.lam
    other = ClassAgnostic(model, photos[:9], LAYER, 8, preset=preset, **SMALL)
    with pytest.raises(ValueError, match="other facets"):
        other.load_state_dict(first.state_dict())


def test_small_inputs_clamp_the_counts(model, photos):
    run = ClassAgnostic(model, photos[[0, 4, 8]], LAYER, 2, size=32, clusters=10, per_cluster=10,
                        top_channels=10_000, pca=50)
    channels = run.targets.shape[1]
    assert len(run.facets.members) == 3 and all(len(m) == 1 for m in run.facets.members)
    assert run.channels.shape == (3, channels)
    assert all(float(w) == 1.0 for w in torch.cat(run.facets.weights))
    run.run(2)
    assert run.images().shape == (3, 3, 32, 32)


def test_the_default_penalty_is_the_last_convolution_inside_the_layer(model):
    assert default_penalty(model, "_blocks.15") == "_blocks.15._project_conv"
    assert default_penalty(model, "_conv_head") == "_conv_head"
    assert default_penalty(model, "_blocks.15._swish") == "_blocks.15._swish"


@pytest.mark.parametrize("change, match", [
    (dict(layer="_blocks.99"), "unknown layer"),
    (dict(x=torch.zeros(4, 1, 32, 32)), r"\(B, 3, H, W\)"),
    (dict(x=torch.zeros(3, 32, 32)), r"\(B, 3, H, W\)"),
    (dict(x=torch.zeros(1, 3, 32, 32)), "2 or more"),
    (dict(nan=True), "NaN"),
    (dict(preset="lucid"), "unknown class-agnostic preset"),
    (dict(clusters=0), "clusters must be an int >= 1"),
    (dict(penalty="_blocks.12._project_conv"), "does not run before"),
    (dict(steps=0), "steps must be"),
])
def test_bad_arguments_give_clear_errors(model, photos, change, match):
    kwargs = dict(layer=LAYER, x=photos[:4].clone(), **SMALL)
    if change.pop("nan", False):
        kwargs["x"][1, 0, 3, 3] = float("nan")
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        ClassAgnostic(model, kwargs.pop("x"), kwargs.pop("layer"), kwargs.pop("steps", 5), **kwargs)


def test_the_fused_nesterov_loop_matches_torch_optim():
    """maximize with optimizer="nesterov" (the fused step) against the eager loop on torch.optim.SGD(nesterov=True)."""
    from _backprop_models import ReluOnlyNet

    from featvis_fast.reconstruction._eager import maximize_eager
    from featvis_fast.reconstruction.maximize import maximize

    with torch.random.fork_rng():  # the net's convolutions draw from the global generator
        torch.manual_seed(0)
        net = ReluOnlyNet()
    kwargs = dict(steps=5, size=23, batch=2, seed=1, param="pixel", optimizer="nesterov", lr=20.0)
    fused = maximize(net, "layer.0:3", progress=False, **kwargs)
    eager = maximize_eager(net, "layer.0:3", **kwargs)
    plain = maximize(net, "layer.0:3", progress=False, **{**kwargs, "optimizer": "sgd"})
    assert (fused - eager).abs().max() < 2e-5 and (fused - plain).abs().max() > 1e-3


def test_a_schedule_must_keep_the_optimizer():
    x0 = torch.zeros(1, 1, 4, 4)
    ascent = Ascent(x0, StepSettings(optimizer="nesterov"), torch.Generator(),
                    schedule=lambda step: StepSettings(optimizer="adam"), backend="torch")
    with pytest.raises(ValueError, match="optimizer"):
        ascent.advance(lambda crop: (crop.sum((1, 2, 3)), torch.ones_like(crop)))


def _tv(u: torch.Tensor) -> torch.Tensor:
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    return torch.sqrt(gy * gy + gx * gx).sum()


def _chambolle(f: torch.Tensor, lam: float, updates: int) -> torch.Tensor:
    """Chambolle (2004) as written there, one 2-D plane in float64: u = f - lam div p,
    p <- (p + tau grad(div p - f / lam)) / (1 + tau |grad(div p - f / lam)|), tau = 1/4."""
    n, m = f.shape
    p1, p2 = torch.zeros(n, m, dtype=torch.float64), torch.zeros(n, m, dtype=torch.float64)

    def div(p1, p2):
        d = torch.zeros(n, m, dtype=torch.float64)
        for i in range(n):
            for j in range(m):
                d[i, j] += (p1[i, j] if i < n - 1 else 0.0) - (p1[i - 1, j] if i > 0 else 0.0)
                d[i, j] += (p2[i, j] if j < m - 1 else 0.0) - (p2[i, j - 1] if j > 0 else 0.0)
        return d

    for _ in range(updates):
        v = div(p1, p2) - f / lam
        g1 = torch.zeros(n, m, dtype=torch.float64)
        g2 = torch.zeros(n, m, dtype=torch.float64)
        g1[:-1] = v[1:] - v[:-1]
        g2[:, :-1] = v[:, 1:] - v[:, :-1]
        norm = 1 + 0.25 * torch.sqrt(g1 * g1 + g2 * g2)
        p1, p2 = (p1 + 0.25 * g1) / norm, (p2 + 0.25 * g2) / norm
    return f - lam * div(p1, p2)


def test_tv_denoise_matches_chambolles_algorithm_and_its_properties():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64, generator=gen)
    got = tv_denoise(x, 0.2, iterations=12)
    for n in range(2):
        for c in range(3):
            assert torch.allclose(got[n, c], _chambolle(x[n, c], 0.2, 11), rtol=1e-10, atol=1e-12)
    assert tv_denoise(x, 0.0) is x
    big = torch.rand(1, 3, 48, 48, generator=gen)
    weak, strong = tv_denoise(big, 0.05), tv_denoise(big, 0.5)
    assert _tv(strong) < _tv(weak) < 0.7 * _tv(big)
    assert float((weak - big).abs().mean()) < float((strong - big).abs().mean()) < 0.5
    assert torch.allclose(strong.mean(dim=(2, 3)), big.mean(dim=(2, 3)), atol=1e-4)  # TV denoising keeps the mean


def test_tv_denoise_matches_scikit_image_where_installed():
    restoration = pytest.importorskip("skimage.restoration")
    x = torch.rand(1, 3, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # a negative eps never stops it early
    theirs = restoration.denoise_tv_chambolle(x[0].permute(1, 2, 0).numpy(), weight=0.3, eps=-1e300, max_num_iter=30,
                                              channel_axis=-1)
    assert torch.allclose(tv_denoise(x, 0.3, 30)[0], torch.from_numpy(theirs).permute(2, 0, 1), atol=1e-10)


def test_the_centre_mask_is_a_gaussian_ring_scaled_to_one():
    d = centre_distance(33, 40)
    mask = centre_mask(d, 6.0)
    g = lambda r: math.exp(-0.5 * ((r - 1) / 6.0) ** 2)  # noqa: E731
    lowest = g(math.hypot(16, 20))  # the farthest pixel, (0, 0)
    assert mask.shape == (33, 40) and float(mask[0, 0]) == 0.0 and float(mask[16, 21]) == pytest.approx(1.0)
    for (i, j) in [(16, 20), (16, 30), (3, 5), (30, 38)]:
        expected = (g(math.hypot(i - 16, j - 20)) - lowest) / (1 - lowest)
        assert float(mask[i, j]) == pytest.approx(expected, abs=1e-6)
    assert float(mask.min()) == 0.0 and float(mask.max()) == pytest.approx(1.0)
    assert torch.equal(centre_mask(torch.zeros(3, 3), 1.0), torch.ones(3, 3))


def test_only_names_existing_clusters(model, photos):
    with pytest.raises(ValueError, match="only must name clusters in 0..2"):
        ClassAgnostic(model, photos[:4], LAYER, 5, **{**SMALL, "clusters": 3}, only=[3])


def test_a_checkpoint_of_other_clusters_is_refused(model, photos):
    kw = {**SMALL, "clusters": 3}
    first = ClassAgnostic(model, photos[:6], LAYER, 5, **kw, only=[0, 1])
    other = ClassAgnostic(model, photos[:6], LAYER, 5, **kw, only=[1, 2])
    with pytest.raises(ValueError, match=r"holds clusters \[0, 1\]"):
        other.load_state_dict(first.state_dict())
