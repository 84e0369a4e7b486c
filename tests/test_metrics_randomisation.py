"""MPRT and Random Logit (featvis_fast.metrics.randomisation).

Parity: Quantus 0.6's MPRT and RandomLogit on the same float64 models, inputs and attributions,
with the same explanations (an explain_func that calls fv.saliency, as ours do) and the same random
draws: layer_seeds=[seed + 1] * L replays Quantus' torch.manual_seed(seed + 1) before every layer,
other_class replays its np.random draw. Quantus gets normalise_func_kwargs={"normalise_axes":
(1, 2, 3)} (each map divided by its own largest |a|, as ours); with its default batch-wide
normalisation it agrees on single images. Our similarities against skimage's structural_similarity
(2-D, and 1-D on the flattened map as Quantus calls it) and scipy's spearmanr (with ties).
Known answers: a layer the explanation does not depend on gives similarity 1; classes whose
explanations are scaled copies of one another give 1 (or -1 for opposite signs).
"""
import copy

import _quantus as Q
import _zoo
import numpy as np
import pytest
import torch
from torch import nn

import featvis_fast as fv
from featvis_fast.metrics import randomisation as R
from featvis_fast.metrics import similarities as S

_close = Q.assert_relative  # ours == theirs to 1e-9 of the largest |theirs|



def _np_saliency(model, inputs, targets, **kwargs):
    """Quantus' explain_func: fv.saliency(abs=True), what ours compute with explain_kwargs={"abs": True}."""
    return fv.saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets), abs=True).numpy()


def _ssim_2d(a, b, batched=True, **kwargs):
    """Quantus' ssim (skimage, data_range over both maps) on the (C, H, W) maps instead of the flattened ones."""
    from skimage.metrics import structural_similarity

    out = []
    side = int(round((a.shape[1] / 3) ** 0.5))  # square maps of 3 channels
    for aa, bb in zip(a.reshape(-1, 3, side, side), b.reshape(-1, 3, side, side)):
        data_range = float(max(aa.max(), bb.max()) - min(aa.min(), bb.min()))
        out.append(structural_similarity(aa, bb, data_range=data_range, channel_axis=0))
    return np.asarray(out)


PER_IMAGE = {"normalise_axes": [1, 2, 3]}


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4, classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.adaptive_avg_pool2d(self.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = _zoo.realistic(SmallCNN(), 16).double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target, torch.from_numpy(_np_saliency(model, x.numpy(), target.numpy()))


@pytest.fixture(scope="module")
def resnet():
    model, x, target = Q.resnet18_case(batch=2, side=32)
    return model, x, target, torch.from_numpy(_np_saliency(model, x.numpy(), target.numpy()))


# ---------------------------------------------------------------- similarities


@pytest.mark.parametrize("channels", [1, 2])
def test_ssim_equals_skimage_2d_and_quantus_flattened(channels):
    quantus = Q.quantus()
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(channels)
    a = torch.rand(3, channels, 9, 11, generator=g, dtype=torch.float64)
    b = a + 0.4 * torch.randn(3, channels, 9, 11, generator=g, dtype=torch.float64)
    an, bn = Q.arrays(a, b)
    ranges = [float(max(x.max(), y.max()) - min(x.min(), y.min())) for x, y in zip(an, bn)]
    theirs_2d = [structural_similarity(x, y, data_range=r, channel_axis=0) for x, y, r in zip(an, bn, ranges)]
    _close(S.structural_similarity(a, b), theirs_2d)
    theirs_flat = quantus.functions.similarity_func.ssim(an.reshape(3, -1), bn.reshape(3, -1), batched=True)
    _close(S.structural_similarity(a, b, flattened=True), theirs_flat)
    assert np.abs(np.array(theirs_2d) - np.array(theirs_flat)).min() > 1e-3  # the two definitions differ


def test_ssim_of_one_window_by_hand():
    """A 7 x 7 map holds one window: the SSIM formula with sample (co)variances and data_range over both maps."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 7, 7, generator=g, dtype=torch.float64)
    b = 0.5 * a + 0.3 * torch.rand(1, 1, 7, 7, generator=g, dtype=torch.float64)
    x, y = a.numpy().ravel(), b.numpy().ravel()
    c1 = (0.01 * (max(x.max(), y.max()) - min(x.min(), y.min()))) ** 2
    c2 = (0.03 * (max(x.max(), y.max()) - min(x.min(), y.min()))) ** 2
    cov = np.cov(x, y)  # N - 1 normalisation
    expected = ((2 * x.mean() * y.mean() + c1) * (2 * cov[0, 1] + c2)
                / ((x.mean() ** 2 + y.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
    _close(S.structural_similarity(a, b), [expected])
    assert S.structural_similarity(a, a).item() == pytest.approx(1.0, abs=1e-15)


def test_spearman_equals_scipy_with_ties():
    quantus = Q.quantus()
    g = torch.Generator().manual_seed(1)
    a = torch.round(4 * torch.rand(4, 1, 6, 5, generator=g, dtype=torch.float64)) / 4  # many ties
    b = torch.round(3 * torch.randn(4, 1, 6, 5, generator=g, dtype=torch.float64))
    an, bn = Q.arrays(a.reshape(4, -1), b.reshape(4, -1))
    _close(S.spearman_correlation(a, b), quantus.functions.similarity_func.correlation_spearman(an, bn, batched=True))
    assert torch.equal(S.average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0]])),
                       torch.tensor([[4.0, 1.0, 4.0, 2.0, 4.0]], dtype=torch.float64))
    assert S.spearman_correlation(a, -a).tolist() == pytest.approx([-1.0] * 4, abs=1e-15)


def test_constant_maps_give_nan_as_skimage_and_scipy():
    flat = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    assert torch.isnan(S.structural_similarity(flat, flat)).all()
    assert torch.isnan(S.spearman_correlation(flat, torch.rand(1, 1, 8, 8, dtype=torch.float64))).all()


# ---------------------------------------------------------------- MPRT parity


@pytest.mark.parametrize("order", ["top_down", "bottom_up", "independent"])
@pytest.mark.parametrize("similarity", ["spearman", "ssim_flattened", "ssim"])
def test_mprt_equals_quantus_layer_by_layer(small, order, similarity):
    quantus = Q.quantus()
    model, x, target, a = small
    # Quantus' batched ssim returns a list, on which its MPRT calls .tolist(): an array makes it run
    quantus_ssim = lambda a, b, batched=True, **kw: np.asarray(quantus.functions.similarity_func.ssim(a, b, batched))
    quantus_similarity = {"spearman": None, "ssim_flattened": quantus_ssim, "ssim": _ssim_2d}[similarity]
    metric = quantus.MPRT(similarity_func=quantus_similarity, layer_order=order, seed=42,
                          normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    xn, an, yn = Q.arrays(x, a, target)
    theirs = metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=_np_saliency, device="cpu")
    layers = [name for name in theirs if name != "original"]
    ours = fv.metrics.mprt(model, x, a, target, explain="saliency", explain_kwargs={"abs": True}, order=order,
                           similarity=similarity, layer_seeds=[43] * len(layers))
    assert ours.layers == tuple(layers) and len(layers) == 5  # conv1, bn1, conv2, bn2, fc
    assert ours.layers[0] == ("fc" if order == "top_down" else "conv1")
    _close(ours.similarities, np.array([theirs[name] for name in layers]).T)
    _close(ours.original, theirs["original"])
    _close(ours.scores, np.array([theirs[name] for name in layers]).mean(axis=0))
    assert ours.original.tolist() == pytest.approx([1.0, 1.0], abs=1e-12)  # a is the same saliency
    assert ours.similarities.max() < 0.999
    if similarity == "spearman":
        # Quantus' return_average_correlation skips a key "orig", so it averages the unrandomised model in too
        quantus_average = metric.recompute_average_correlation_per_sample()
        _close((ours.original + ours.similarities.sum(1)) / (len(layers) + 1), quantus_average)


def test_mprt_resnet18_equals_quantus_fully_randomised(resnet):
    quantus = Q.quantus()
    model, x, target, a = resnet
    metric = quantus.MPRT(seed=42, skip_layers=True, normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    xn, an, yn = Q.arrays(x, a, target)
    theirs = metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=_np_saliency, device="cpu")
    names = R.randomisable_layers(model)
    assert len(names) == 41 and names[0] == "conv1" and names[-1] == "fc"
    ours = fv.metrics.mprt(model, x, a, target, explain_kwargs={"abs": True}, skip_layers=True,
                           layer_seeds=[43] * len(names))
    assert ours.layers == ("conv1",) and list(theirs) == ["original", "conv1"]
    _close(ours.similarities[:, 0], theirs["conv1"])
    _close(ours.scores, theirs["conv1"])
    _close(ours.original, theirs["original"])


def test_randomise_layer_replays_quantus_reset_and_leaves_global_rng():
    layer = nn.Conv2d(3, 4, 3).double()
    theirs = copy.deepcopy(layer)
    torch.manual_seed(43)
    theirs.reset_parameters()
    state = torch.get_rng_state()
    R.randomise_layer(layer, 43)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(layer.weight, theirs.weight) and torch.equal(layer.bias, theirs.bias)
    seeds = R.draw_layer_seeds(6, torch.Generator().manual_seed(0))
    assert len(set(seeds)) == 6 and seeds == R.draw_layer_seeds(6, torch.Generator().manual_seed(0))


def test_mprt_is_seeded_and_leaves_the_model_alone(small):
    model, x, target, a = small
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    run = lambda model, x, a, **kw: fv.metrics.mprt(model, x, a, target, explain_kwargs={"abs": True},
                                                    order="independent", similarity="ssim", **kw)
    first = run(model, x, a, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert first.layers == ("conv1", "bn1", "conv2", "bn2", "fc")
    assert first.similarities.dtype == torch.float64 and first.scores.shape == (2,)
    assert torch.equal(run(model, x, a, seed=3).similarities, first.similarities)
    assert torch.equal(run(model, x, a, generator=torch.Generator().manual_seed(3)).similarities,
                       first.similarities)
    _close(run(model, x, a, seed=3, batch_size=1).similarities, first.similarities)  # one image per explanation
    other = run(model, x, a, seed=4)
    assert (other.similarities[:, [0, 2, 4]] - first.similarities[:, [0, 2, 4]]).abs().min() > 1e-6  # convs, fc
    # batch norms reset to weight 1, bias 0, mean 0, var 1 whatever the seed
    assert torch.equal(other.similarities[:, [1, 3]], first.similarities[:, [1, 3]])
    single = run(copy.deepcopy(model).float(), x.float(), a.float(), seed=3)
    assert single.scores.dtype == single.similarities.dtype == torch.float32
    assert torch.isfinite(single.similarities).all()


class OffsetModel(nn.Module):
    """A layer the gradient never sees: `offset` adds a learnt constant to the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.offset = nn.Linear(1, 5)

    def forward(self, x):
        features = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc(features) + self.offset(x.new_ones(x.shape[0], 1))


@pytest.mark.parametrize("similarity", ["spearman", "ssim"])
def test_mprt_a_layer_the_explanation_does_not_use_gives_one(similarity):
    torch.manual_seed(0)
    model = OffsetModel().double().eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cascade = fv.metrics.mprt(model, x, None, 1, similarity=similarity)
    assert cascade.layers == ("offset", "fc", "conv")
    assert cascade.original.tolist() == pytest.approx([1.0, 1.0], abs=1e-14)
    assert cascade.similarities[:, 0].tolist() == pytest.approx([1.0, 1.0], abs=1e-14)
    assert cascade.similarities[:, 1:].max() < 0.99
    alone = fv.metrics.mprt(model, x, None, 1, similarity=similarity, order="independent", layers=["offset", "conv"])
    assert alone.layers == ("conv", "offset")
    assert alone.similarities[:, 1].tolist() == pytest.approx([1.0, 1.0], abs=1e-14)
    assert alone.similarities[:, 0].max() < 0.99


# ---------------------------------------------------------------- Random Logit


def _quantus_other_classes(seed, num_classes, target):
    """The classes Quantus' RandomLogit draws: np.random.seed(seed), an index into the other classes."""
    np.random.seed(seed)
    offsets = np.random.randint(0, num_classes - 1, len(target))
    return torch.from_numpy(offsets + (offsets >= target.numpy()))


@pytest.mark.parametrize("similarity", ["ssim_flattened", "ssim", "spearman"])
def test_random_logit_equals_quantus(resnet, similarity):
    quantus = Q.quantus()
    model, x, target, a = resnet
    quantus_similarity = {"spearman": quantus.functions.similarity_func.correlation_spearman,
                          "ssim_flattened": None, "ssim": _ssim_2d}[similarity]
    metric = quantus.RandomLogit(similarity_func=quantus_similarity, num_classes=1000, seed=42,
                                 normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    xn, an, yn = Q.arrays(x, a, target)
    theirs = metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=_np_saliency, device="cpu")
    other = _quantus_other_classes(42, 1000, target)
    assert not torch.equal(other, target)
    ours = fv.metrics.random_logit(model, x, a, target, explain_kwargs={"abs": True}, similarity=similarity,
                                   other_class=other)
    _close(ours, theirs)
    if similarity == "ssim":  # our own draw, and the attributions computed by explain
        drawn = fv.metrics.random_logit(model, x, None, target, explain_kwargs={"abs": True})
        assert drawn.shape == (2,) and drawn.dtype == torch.float64 and (drawn < 0.9).all()


def test_random_logit_differs_from_quantus_defaults_only_by_batch_wide_normalisation(resnet):
    quantus = Q.quantus()
    model, x, target, a = resnet
    metric = quantus.RandomLogit(num_classes=1000, seed=42, disable_warnings=True)  # Quantus' defaults
    ours_batched = fv.metrics.random_logit(model, x, a, target, explain_kwargs={"abs": True},
                                           similarity="ssim_flattened",
                                           other_class=_quantus_other_classes(42, 1000, target))
    batched = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=a.numpy(),
                     explain_func=_np_saliency, device="cpu")
    assert np.abs(ours_batched.numpy() - np.array(batched)).max() > 1e-4  # each image scaled by the batch's max
    for i in range(2):
        xi, ai, ti = x[i:i + 1], a[i:i + 1], target[i:i + 1]
        theirs = metric(model=model, x_batch=xi.numpy(), y_batch=ti.numpy(), a_batch=ai.numpy(),
                        explain_func=_np_saliency, device="cpu")
        ours = fv.metrics.random_logit(model, xi, ai, ti, explain_kwargs={"abs": True}, similarity="ssim_flattened",
                                       other_class=_quantus_other_classes(42, 1000, ti))
        _close(ours, theirs)


def test_random_logit_draws_are_seeded_other_classes():
    classes = torch.tensor([0, 3, 9, 5, 5, 5])
    drawn = R.draw_other_classes(classes, 10, torch.Generator().manual_seed(0))
    assert ((drawn >= 0) & (drawn < 10) & (drawn != classes)).all()
    assert torch.equal(drawn, R.draw_other_classes(classes, 10, torch.Generator().manual_seed(0)))
    many = R.draw_other_classes(torch.full((2000,), 4), 5, torch.Generator().manual_seed(1))
    assert set(many.tolist()) == {0, 1, 2, 3}  # uniform over the others, never the target


def _scaled_classes_model(scales, side=8):
    """A linear model whose class k has weights scales[k] * w: every class's saliency is a multiple of |w|."""
    torch.manual_seed(0)
    w = torch.randn(3 * side * side, dtype=torch.float64)
    fc = nn.Linear(3 * side * side, len(scales), bias=False).double()
    with torch.no_grad():
        fc.weight.copy_(torch.tensor(scales, dtype=torch.float64)[:, None] * w)
    return nn.Sequential(nn.Flatten(), fc).eval()


@pytest.mark.parametrize("similarity", ["ssim", "ssim_flattened", "spearman"])
def test_random_logit_known_answers(similarity):
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    same = fv.metrics.random_logit(_scaled_classes_model([1.0, 2.0, 4.0, 8.0]), x, None, torch.tensor([0, 1, 3]),
                                   similarity=similarity)
    assert same.tolist() == pytest.approx([1.0] * 3, abs=1e-14)
    # two classes with opposite gradients: the other class is forced; signed maps are exact negatives
    opposite = _scaled_classes_model([1.0, -1.0])
    flipped = fv.metrics.random_logit(opposite, x, None, 0, similarity=similarity)
    w = opposite[1].weight.detach()[0].reshape(1, 3, 8, 8)
    w = (w / w.abs().max()).numpy()
    if similarity == "spearman":
        expected = -1.0
    else:
        from skimage.metrics import structural_similarity

        a, b = (w[0], -w[0]) if similarity == "ssim" else (w.ravel(), -w.ravel())
        expected = structural_similarity(a, b, data_range=2.0, channel_axis=0 if similarity == "ssim" else None)
    assert flipped.tolist() == pytest.approx([expected] * 3, abs=1e-12)
    absolute = fv.metrics.random_logit(opposite, x, None, 0, similarity=similarity, abs=True)
    assert absolute.tolist() == pytest.approx([1.0] * 3, abs=1e-14)


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors(small):
    model, x, target, a = small
    with pytest.raises(ValueError, match="attributions"):
        fv.metrics.mprt(model, x, a[:, :, :8], target)
    with pytest.raises(ValueError, match="needs a target"):
        fv.metrics.mprt(model, x, a, None)
    with pytest.raises(ValueError, match="unknown order"):
        fv.metrics.mprt(model, x, a, target, order="cascading")
    with pytest.raises(ValueError, match="unknown similarity"):
        fv.metrics.mprt(model, x, a, target, similarity="pearson")
    with pytest.raises(ValueError, match="no module 'head'"):
        fv.metrics.mprt(model, x, a, target, layers=["head"])
    with pytest.raises(ValueError, match="'relu'.*reset_parameters"):
        fv.metrics.mprt(model, x, a, target, layers=["relu"])
    with pytest.raises(ValueError, match="layer_seeds must be 5 ints"):
        fv.metrics.mprt(model, x, a, target, layer_seeds=[1, 2])
    with pytest.raises(ValueError, match="channels"):
        fv.metrics.mprt(model, x, a.sum(1), target, explain_kwargs={"abs": True})
    with pytest.raises(ValueError, match="window does not fit"):
        fv.metrics.mprt(model, x[:, :, :6, :6], a[:, :, :6, :6], target, similarity="ssim")
    with pytest.raises(ValueError, match="needs a target"):
        fv.metrics.random_logit(model, x, a, None)
    with pytest.raises(TypeError, match="class targets"):
        fv.metrics.random_logit(model, x, a, lambda out: out[:, 0])
    with pytest.raises(ValueError, match="other than the targets"):
        fv.metrics.random_logit(model, x, a, target, other_class=target)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        fv.metrics.random_logit(model, x, a, 0, num_classes=1)
    with pytest.raises(ValueError, match=r"not all in \[0, 10\)"):
        fv.metrics.random_logit(model, x, a, 10)
