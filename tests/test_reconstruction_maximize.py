"""fv.maximize: it raises the target far above what the sample photos give it, agrees with the
eager Lucid-style loop, is reproducible by seed, continues exactly from a saved state, sets the
batch from "layer:*", leaves the model unchanged, and names bad objectives clearly."""
import pytest
import torch
import torch.nn as nn
from _backprop_models import ReluOnlyNet

import featvis_fast as fv
from featvis_fast._ascent_reference import Regularizers
from featvis_fast.models import IMAGENET_MEAN, IMAGENET_STD, extract
from featvis_fast.reconstruction._ascent import StepSettings
from featvis_fast.reconstruction._eager import maximize_eager
from featvis_fast.reconstruction.maximize import Maximization, maximize


class SmoothNet(nn.Module):
    """conv / batch norm / tanh with a residual add, average pooling and a linear head: smooth, so
    two correct implementations differ only by rounding (no rectifier kinks or max-pool ties)."""

    def __init__(self, classes=5, seed=0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Tanh())
            self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Tanh(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
            self.layer = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.Tanh())
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        self.eval()

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.layer(torch.tanh(x + self.body(x))))


MEAN, STD = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_maximizing_a_channel_of_the_default_model_beats_the_sample_photos():
    model, preprocess = fv.load_model()
    layer, channel, size = "_blocks.4", 7, 64
    images = maximize(model, f"{layer}:{channel}", steps=48, size=size, seed=0, progress=False)
    assert images.shape == (1, 3, size, size) and images.min() >= 0 and images.max() <= 1
    photos = torch.cat([preprocess(fv.sample_image(s).convert("RGB").resize((size, size)), size=size)
                        for s in ("chelsea", "coffee", "astronaut")])
    with torch.no_grad():
        reached = extract(model, (images - MEAN) / STD, layer)[:, channel].mean()
        natural = extract(model, photos, layer)[:, channel].mean(dim=(1, 2)).max()
    assert reached > 2 * natural.abs() + 0.5, (float(reached), float(natural))


def test_reproducible_by_seed_and_one_image_per_channel():
    model = ReluOnlyNet()
    a = maximize(model, "layer.0:3", steps=5, size=24, seed=4, progress=False)
    b = maximize(model, "layer.0:3", steps=5, size=24, seed=4, progress=False)
    c = maximize(model, "layer.0:3", steps=5, size=24, seed=5, progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    every = maximize(model, "layer.0:*", steps=2, size=24, param="pixel", transforms="none", progress=False)
    assert every.shape == (16, 3, 24, 24)
    combo = maximize(model, "layer.0:3 - 0.5*body.3 + 0.1*class:2", steps=2, size=24, batch=2, progress=False)
    assert combo.shape == (2, 3, 24, 24)


def test_a_list_of_objectives_makes_one_image_each_as_each_does():
    from featvis_fast.reconstruction.objectives import Each, parse

    model = ReluOnlyNet()
    specs = ["layer.0:3", "layer.0:5 - 0.5*body.3", "class:2"]
    as_list = maximize(model, specs, steps=4, size=24, seed=1, progress=False)
    of_strings = maximize(model, Each(specs), steps=4, size=24, seed=1, progress=False)
    of_objectives = maximize(model, Each([parse(s) for s in specs]), steps=4, size=24, seed=1, progress=False)
    assert as_list.shape == (3, 3, 24, 24)
    assert torch.equal(as_list, of_strings) and torch.equal(as_list, of_objectives)
    assert not torch.equal(as_list[:1], as_list[1:2])  # each image follows its own objective
    with pytest.raises(ValueError, match="each target makes one image"):
        maximize(model, ["layer.0:*", "layer.0:1"], steps=2, size=24, progress=False)
    with pytest.raises(ValueError, match="out of range for layer 'layer.0'"):
        maximize(model, ["layer.0:1", "layer.0:99"], steps=2, size=24, progress=False)
    with pytest.raises(TypeError, match="a list of objectives"):
        Each("layer.0:1")


def test_the_model_is_left_unchanged():
    model = ReluOnlyNet()
    model.train()
    model.body[1].eval()  # a frozen batch norm inside a training model keeps its own mode
    state = {k: v.clone() for k, v in model.state_dict().items()}
    maximize(model, "class:1", steps=3, size=24, progress=False)
    assert model.training and not model.body[1].training and model.body[4].training
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items() if "num_batches" not in k)


@pytest.mark.parametrize("objective,kwargs,match", [
    ("nope:3", {}, "nope"),
    ("layer.0:99", {}, "out of range for layer 'layer.0' with 16 channels"),
    ("class:9", {}, "out of range for an output with 5 classes"),
    ("layer.0:x", {}, "not an integer"),
    ("layer.0:1", {"steps": 0}, "steps"),
    ("layer.0:1", {"param": "wavelet"}, "param"),
    ("layer.0:*", {"batch": 3}, "sets the batch to 16"),
    ("layer.0:-1", {}, "out of range"),
    ("layer.0:0@3", {}, "a neuron is layer:channel@y,x"),
    ("layer.0:0@9,9", {"param": "pixel", "transforms": "none", "jitter": 8}, "outside layer 'layer.0'"),
    ("layer.0:0", {"regularizers": {"tv": 1.0}}, "param='pixel'"),
    ("layer.0:0", {"mean": (0.5,)}, "mean must be three"),
    ("a*layer.0:1", {}, "number\\*term"),
])
def test_bad_arguments_give_clear_errors(objective, kwargs, match):
    """(The neuron at 9,9 exists in the 12 x 12 map of a 24 px input, not in the 8 x 8 map of the
    16 px crop the model sees with jitter 8: positions are checked at the size the model sees.)"""
    with pytest.raises(ValueError, match=match):
        maximize(ReluOnlyNet(), objective, size=24, progress=False, **{"steps": 2, **kwargs})


@pytest.mark.parametrize("kwargs", [
    {"param": "pixel", "transforms": "none"},
    {"param": "pixel", "optimizer": "sgd", "lr": 20.0},
    {"param": "fft"},
    {"param": "pixel", "transforms": "none", "jitter": 3, "regularizers": {"l2": 0.01, "tv": 0.05, "lp": 0.001}},
    {"param": "pixel", "optimizer": "sgd", "lr": 20.0, "jitter": 2, "blur_every": 2, "regularizers": {"l1": 0.01}},
])
def test_the_fused_loop_matches_the_eager_reference(kwargs):
    """Same generator draws in the same order, so the images agree up to rounding. The model is
    smooth (fresh random weights): with rectifiers, a rounding difference that flips one mask
    bit changes a gradient by a finite amount, and ReluOnlyNet drew weights where that happened."""
    seed = int(torch.randint(0, 2**31 - 1, ()))
    model = SmoothNet(seed=seed)
    fused = maximize(model, "layer.0:3 + 0.2*class:1", steps=5, size=23, batch=2, seed=1, progress=False, **kwargs)
    eager = maximize_eager(model, "layer.0:3 + 0.2*class:1", steps=5, size=23, batch=2, seed=1, **kwargs)
    assert fused.shape == (2, 3, 23, 23)
    assert (fused - eager).abs().max() < (2e-5 if kwargs.get("optimizer") == "sgd" else 1e-4), seed
    start = Maximization(model, "layer.0:3", size=23, batch=2, seed=1, param=kwargs["param"]).images()
    assert (fused - start).abs().max() > 5e-3, seed  # the images moved


def test_a_restored_state_continues_exactly():
    model = ReluOnlyNet()
    settings = StepSettings(jitter=2, regularizers=Regularizers(tv=0.01))
    whole = Maximization(model, "layer.0:*", size=20, param="pixel", seed=3, settings=settings)
    whole.run(6)
    first = Maximization(model, "layer.0:*", size=20, param="pixel", seed=3, settings=settings)
    first.run(3)
    state = first.state_dict()
    resumed = Maximization(model, "layer.0:*", size=20, param="pixel", seed=3, settings=settings)
    resumed.load_state_dict(state)
    resumed.run(3)
    assert resumed.step == 6 and torch.equal(resumed.images(), whole.images())
    assert torch.equal(resumed.scores, whole.scores)


def test_layout_and_autocast_options_keep_the_gradient():
    from featvis_fast.reconstruction._gradient import GradientFunction
    from featvis_fast.reconstruction.objectives import parse

    model, gen = ReluOnlyNet(), torch.Generator()
    crop = torch.randn(3, 3, 21, 19, generator=torch.Generator().manual_seed(0))
    goal = parse("layer.0:3 + 0.5*class:2")

    def grad(**kw):
        return GradientFunction(model, goal, lambda c: c * 2, generator=gen, **kw)(crop)

    scores, plain = grad(channels_last=False)
    scores_cl, laid_out = grad(channels_last=True)
    assert torch.allclose(scores, scores_cl, atol=1e-5) and torch.allclose(plain, laid_out, atol=1e-5)
    scores_bf, low = grad(autocast="bf16")
    cosine = torch.nn.functional.cosine_similarity(low.flatten(), plain.flatten(), dim=0)
    assert low.dtype == torch.float32 and cosine > 0.99 and torch.allclose(scores_bf, scores, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="autocast"):
        maximize(model, "layer.0:1", steps=1, size=24, autocast="int8", progress=False)


def test_transforms_must_be_callables():
    with pytest.raises(TypeError, match="callables"):
        maximize(SmoothNet(), "layer.0:1", steps=1, size=24, transforms=["jitter"], progress=False)


def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        maximize(SmoothNet(), "layer.0:1", steps=1, size=24, cuda_graph=True, progress=False)


def test_the_graphed_branch_of_a_step_reaches_the_capture_on_any_machine():
    """Forced on a CPU run, a step's CUDA-graph branch gets as far as the capture, which refuses
    a CPU input: every name on that path resolves (the GPU tests run only where there is a GPU)."""
    run = Maximization(SmoothNet(), "layer.0:1", size=24, batch=2, seed=0)
    run.gradient.cuda_graph = True
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        run.run(1)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("param", ["pixel", "fft"])
def test_the_graphed_step_matches_the_eager_one_on_the_gpu(param):
    model = SmoothNet(seed=int(torch.randint(0, 2**31 - 1, ()))).cuda()
    kw = dict(steps=4, size=32, batch=3, seed=2, param=param, optimizer="sgd", lr=5.0, progress=False)
    run = Maximization(model, "layer.0:3 + 0.2*class:1", size=32, batch=3, seed=2, param=param, cuda_graph=True,
                       settings=StepSettings(optimizer="sgd", lr=5.0))
    run.run(4)
    assert run.gradient._graph is not None  # captured, not fallen back to eager steps
    graphed = run.images()
    plain = maximize(model, "layer.0:3 + 0.2*class:1", **kw)
    assert graphed.is_cuda and torch.allclose(graphed, plain, atol=1e-4)
    x = torch.randn(2, 3, 32, 32, device="cuda")
    assert torch.allclose(fv.invert(model, x, "layer.0", steps=3, cuda_graph=True, progress=False),
                          fv.invert(model, x, "layer.0", steps=3, progress=False), atol=1e-4)
