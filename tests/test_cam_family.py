"""The gradient CAM family against pytorch-grad-cam 1.5 (PyPI grad-cam).

pytorch-grad-cam computes each CAM in NumPy from the hooked activations and gradients, clamps it
at 0, then min-max normalizes it per image and resizes it with OpenCV, returning float32. The
tests take its map before those last steps (its own `get_cam_image` on the hooked float64
tensors) and require ours to equal it to 1e-9 relative in float64; then its whole pipeline
against `scale_cam_image` applied to ours, which differ only by that float32 rounding. Eigen-CAM's
projection is float32 in pytorch-grad-cam and its sign is LAPACK's: compared up to the sign, at
float32 rounding. On torchvision's ResNet-50, VGG-16 and MobileNetV2, float32 ours must be within
2x pytorch-grad-cam's own float32 error against float64 (either layout, as test_zoo).
"""
from __future__ import annotations

import copy
import functools
import warnings

import _zoo
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import featvis_fast as fv

pytestmark = pytest.mark.skipif(not _zoo.has_torchvision(), reason="pytorch-grad-cam imports torchvision")


@functools.lru_cache(maxsize=1)
def pgc():
    """pytorch_grad_cam, importable beside the CPU torch (torchvision's schemas first, as _zoo)."""
    _zoo.torchvision_models()
    return pytest.importorskip("pytorch_grad_cam")


SCORE_CLASSES = {"scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
CLASSES = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
           "hirescam": "HiResCAM", "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM"}
EIGEN = ("eigencam", "eigengradcam")


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def sign_free_err(ours: torch.Tensor, theirs) -> float:
    """Per image, the error against +theirs or -theirs, whichever is smaller (an SVD's sign is arbitrary)."""
    theirs = torch.as_tensor(theirs).double()
    return max(min(rel_err(o, t), rel_err(o, -t)) for o, t in zip(ours.double(), theirs))


def their_raw_map(name: str, model, layer: str, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """pytorch-grad-cam's map before its clamp, min-max and resize: its get_cam_image on its hooked
    gradients and on a copy of the layer's output (its own hook keeps the tensor, which an in-place
    rectifier after the layer, VGG's or DenseNet's F.relu(inplace=True), overwrites)."""
    pgc()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = dict(model.named_modules())[layer]
    cam = getattr(pgc(), {**CLASSES, **SCORE_CLASSES}[name])(model=model, target_layers=[module])
    copies = []  # pytorch-grad-cam keeps the output tensor itself, which an in-place rectifier after the
    keep = module.register_forward_hook(lambda m, i, o: copies.append(o.detach().clone()))  # layer overwrites
    try:
        outputs = cam.activations_and_grads(x)
        targets = [ClassifierOutputTarget(int(t)) for t in target]
        model.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs)).backward()
        acts = copies[0].cpu().numpy()
        grads = cam.activations_and_grads.gradients[0].cpu().numpy()
        return cam.get_cam_image(x, module, targets, acts, grads, eigen_smooth=False)
    finally:
        keep.remove()
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


def ours(name: str, model, x, target, layer, **kw) -> torch.Tensor:
    return getattr(fv, name)(model, x, target, layer, **kw)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = F.relu(self.bn(self.conv1(x)), inplace=True)
        y = self.block(y)
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = Small()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.running_mean.uniform_(-0.2, 0.2)
    model = model.double().eval()
    x = torch.randn(3, 3, 13, 11, dtype=torch.float64)
    return model, x, torch.tensor([0, 3, 4])


@pytest.mark.parametrize("name", list(CLASSES))
def test_each_cam_equals_pytorch_grad_cams_map(small, name):
    model, x, target = small
    theirs = their_raw_map(name, model, "block", x, target)
    if name in EIGEN:
        assert sign_free_err(ours(name, model, x, target, "block", relu=False), theirs) <= 1e-5
    else:
        got = ours(name, model, x, target, "block")
        assert got.shape == (3, 13, 11) and got.dtype == torch.float64
        assert rel_err(got, np.maximum(theirs, 0)) <= 1e-9


@pytest.mark.parametrize("name", [n for n in CLASSES if n not in EIGEN])
def test_the_whole_pipeline_differs_only_by_its_float32_rounding(small, name):
    """pytorch-grad-cam's output = its scale_cam_image (min-max, OpenCV resize, float32) of our map."""
    pgc()
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, target = small
    module = dict(model.named_modules())["conv1"]
    with getattr(pgc(), CLASSES[name])(model=model, target_layers=[module]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    per_layer = scale_cam_image(ours(name, model, x, target, "conv1").numpy(), (x.shape[-1], x.shape[-2]))
    mine = scale_cam_image(np.maximum(per_layer, 0))  # its multi-layer aggregation scales once more
    assert theirs.dtype == np.float32 and theirs.shape == (3, 13, 11)
    assert np.abs(mine - theirs).max() <= 1e-5


def test_relu_false_keeps_the_sign_and_upsample_reaches_the_input(small):
    model, x, target = small
    signed = fv.hirescam(model, x, target, "block", relu=False)
    assert bool((signed < 0).any())
    assert torch.equal(fv.hirescam(model, x, target, "block"), signed.clamp_min(0))
    up = fv.layercam(model, x, target, "conv1", upsample=True)
    assert up.shape == (3, 13, 11)
    assert up.shape == fv.layercam(model, x, target, "conv1", upsample="nearest").shape


def test_eigencam_sign_makes_the_largest_magnitude_positive(small):
    model, x, target = small
    maps = fv.eigencam(model, x, target, "block", relu=False).flatten(1)
    assert bool((maps.amax(1).abs() >= maps.amin(1).abs()).all())


@pytest.mark.parametrize("name", list(CLASSES))
def test_a_layer_that_is_not_4d_is_refused(small, name):
    model, x, target = small
    with pytest.raises(ValueError, match=r"needs a \(B, C, h, w\) layer output; 'fc' gives \(3, 5\)"):
        ours(name, model, x, target, "fc")
    with pytest.raises(ValueError, match="needs a layer name"):
        getattr(fv, name)(model, x, target)


@pytest.mark.parametrize("name", list(SCORE_CLASSES))
@pytest.mark.parametrize("layer", ["block", "block.1"])
def test_score_cams_equal_pytorch_grad_cams_map_up_to_its_float32_scores(small, name, layer):
    """pytorch-grad-cam rounds the scores (and Score-CAM's softmax) to float32; ours keep float64.
    'block' ends in a ReLU, 'block.1' is that ReLU: rectified outputs, where both ablate to 0."""
    model, x, target = small
    theirs = their_raw_map(name, copy.deepcopy(model), layer, x, target)
    got = getattr(fv, name)(model, x, target, layer, batch_size=5, progress=False)
    assert got.shape == (3, 13, 11) and got.dtype == torch.float64
    assert rel_err(got, np.maximum(theirs, 0)) <= 1e-5
    assert rel_err(got, getattr(fv, name)(model, x, target, layer, progress=False)) <= 1e-12  # any batch size


def test_scorecam_and_ablationcam_match_a_loop_written_from_their_definitions(small):
    """float64 to 1e-12 against one forward per channel, the definitions spelled out."""
    model, x, target = small
    with torch.no_grad():
        acts = {}
        handle = model.block.register_forward_hook(lambda m, i, o: acts.setdefault("a", o.clone()))
        logits = model(x)
        handle.remove()
        a = acts["a"]
        score = logits.gather(1, target[:, None])[:, 0]
        masked, ablated = torch.empty(a.shape[:2], dtype=x.dtype), torch.empty(a.shape[:2], dtype=x.dtype)
        for b in range(x.shape[0]):
            for k in range(a.shape[1]):
                m = F.interpolate(a[b:b + 1, k:k + 1], size=x.shape[-2:], mode="bilinear", align_corners=True)
                m = (m - m.min()) / (m.max() - m.min() + 1e-8)
                masked[b, k] = model(x[b:b + 1] * m)[0, target[b]]
                zeroed = a[b:b + 1].clone()
                zeroed[:, k] = 0
                out = model.fc(F.adaptive_avg_pool2d(zeroed, 1).flatten(1))
                ablated[b, k] = out[0, target[b]]
    weights = {"scorecam": torch.softmax(masked, dim=1), "ablationcam": (score[:, None] - ablated) / score[:, None]}
    for name, w in weights.items():
        expected = (w[:, :, None, None] * a).sum(1).clamp_min(0)
        assert rel_err(getattr(fv, name)(model, x, target, "block", progress=False), expected) <= 1e-12


@pytest.mark.parametrize("name", list(SCORE_CLASSES))
def test_score_cams_refuse_bad_layers(small, name):
    model, x, target = small
    with pytest.raises(ValueError, match=r"needs a \(B, C, h, w\) layer output; 'fc' gives \(3, 5\)"):
        getattr(fv, name)(model, x, target, "fc")
    with pytest.raises(ValueError, match="needs a layer name"):
        getattr(fv, name)(model, x, target)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        getattr(fv, name)(model, x, target, "block", batch_size=0)


def _their_fullgrad(model, x, target):
    pgc()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with warnings.catch_warnings(), pgc().FullGrad(model=model, target_layers=[]) as cam:
        warnings.simplefilter("ignore")
        return cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in target])


def test_fullgrad_equals_pytorch_grad_cams_after_its_final_scaling(small, capsys):
    """Its output is its scale_cam_image of the summed maps, computed in float32 with OpenCV resizes."""
    pgc()
    from pytorch_grad_cam.utils.image import scale_cam_image

    model, x, target = small
    got = fv.fullgrad(model, x, target)
    assert got.shape == (3, 13, 11) and got.dtype == torch.float64 and bool((got >= 0).all())
    theirs = _their_fullgrad(model, x, target)
    assert np.abs(scale_cam_image(got.numpy()) - theirs).max() <= 1e-5


def test_fullgrad_refuses_what_it_cannot_explain(small):
    model, x, target = small
    with pytest.raises(ValueError, match="no Conv2d or BatchNorm2d layer with a bias under 'fc'"):
        fv.fullgrad(model, x, target, "fc")
    shared = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    twice = nn.Sequential(shared, shared, nn.AdaptiveAvgPool2d(1), nn.Flatten()).double().eval()
    with pytest.raises(ValueError, match="ran 2 times"):
        fv.fullgrad(twice, x, 0)


def test_ablationcam_on_a_model_that_reads_the_input_batch_size_after_the_layer():
    """EfficientNet-Lite0 reshapes by the input's batch size after its blocks: the forward before
    the layer then runs on the batch's images; the result equals zeroing each channel by a hook."""
    model = fv.load_model()[0]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        target = logits.argmax(1)
        module = dict(model.named_modules())["_blocks.15"]
        channels = fv.extract(model, x, "_blocks.15").shape[1]
        ablated = torch.empty(channels)
        for k in range(channels):
            def zero(m, i, o, k=k):
                o = o.clone()
                o[:, k] = 0
                return o
            handle = module.register_forward_hook(zero)
            ablated[k] = model(x)[0, target[0]]
            handle.remove()
        acts = fv.extract(model, x, "_blocks.15")
    score = logits[0, target[0]]
    expected = (((score - ablated) / score)[None, :, None, None] * acts).sum(1).clamp_min(0)
    got = fv.ablationcam(model, x, target, "_blocks.15", batch_size=64, progress=False)
    assert rel_err(got, expected) <= 1e-4  # float32, batched against one at a time


# torchvision's own CNNs


LAYERS = {"resnet50": "layer4", "vgg16": "features.29", "mobilenet_v2": "features.18"}
# the score CAMs run one forward per channel and image: early rectified layers with few channels
# (modules that run once, so pytorch-grad-cam's hooks and its ablation layer see one call)
SCORE_LAYERS = {"resnet50": "relu", "vgg16": "features.1", "mobilenet_v2": "features.0"}


@functools.lru_cache(maxsize=1)
def _real(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = _zoo.realistic(getattr(_zoo.torchvision_models(), name)(weights=None), 64)
    x64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        target = m64(x64).argmax(1)
    return model, m64, x64, target


def _theirs(name, model, layer, x, target):
    raw = their_raw_map(name, model, layer, x, target)
    return torch.from_numpy(np.ascontiguousarray(raw if name in EIGEN else np.maximum(raw, 0)))


@pytest.mark.zoo
@pytest.mark.parametrize("arch", list(LAYERS))
@pytest.mark.parametrize("name", list(SCORE_CLASSES))
def test_score_cams_on_torchvision_architectures(arch, name):
    """float64 at pytorch-grad-cam's float32 score rounding; ours in float32 against ours in float64
    within 2x pytorch-grad-cam's own float32 error against that, contiguous or channels-last."""
    m32, m64, x64, target = _real(arch)
    layer = SCORE_LAYERS[arch]
    theirs64 = _theirs(name, copy.deepcopy(m64), layer, x64, target)
    ours64 = getattr(fv, name)(m64, x64, target, layer, progress=False)
    assert theirs64.abs().max() > 0, "a degenerate reference proves nothing"
    assert rel_err(ours64, theirs64) <= 1e-5
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)  # either layout's error, as test_zoo
    torch_err = max(rel_err(_theirs(name, copy.deepcopy(m32), layer, x32, target), ours64),
                    rel_err(_theirs(name, mcl, layer, x32.contiguous(memory_format=torch.channels_last), target),
                            ours64))
    err = rel_err(getattr(fv, name)(m32, x32, target, layer, progress=False), ours64)
    assert err <= 2 * torch_err, f"float32: {err:.2e} > 2 x pytorch-grad-cam's {torch_err:.2e}"


@pytest.mark.zoo
@pytest.mark.parametrize("arch", list(LAYERS))
@pytest.mark.parametrize("name", list(CLASSES))
def test_cam_family_on_torchvision_architectures(arch, name):
    m32, m64, x64, target = _real(arch)
    layer = LAYERS[arch]
    expected = _theirs(name, m64, layer, x64, target)
    assert expected.abs().max() > 0, "a degenerate reference proves nothing"
    compare = sign_free_err if name in EIGEN else rel_err
    relu = name not in EIGEN
    for call in range(2):  # the first call watches, the second rewrites
        got = ours(name, m64, x64, target, layer, relu=relu)
        bar = 1e-5 if name in EIGEN else 1e-9  # pytorch-grad-cam's projection is float32
        assert compare(got, expected) <= bar, f"float64 call {call}"
    if name in EIGEN:
        return
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
    torch_err = max(rel_err(_theirs(name, m32, layer, x32, target), expected),
                    rel_err(_theirs(name, mcl, layer, x32.contiguous(memory_format=torch.channels_last), target),
                            expected))
    for call in range(2):
        err = rel_err(ours(name, m32, x32, target, layer), expected)
        assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x pytorch-grad-cam's {torch_err:.2e}"


@pytest.mark.zoo
@pytest.mark.parametrize("arch", list(LAYERS))
def test_fullgrad_on_torchvision_architectures(arch):
    """Against pytorch-grad-cam's float32 pipeline (its final min-max applied to ours); float32 ours
    against float64 ours within 2x pytorch-grad-cam's float32 error against that, either layout."""
    pgc()
    from pytorch_grad_cam.utils.image import scale_cam_image

    m32, m64, x64, target = _real(arch)
    ours64 = fv.fullgrad(m64, x64, target)
    scaled64 = torch.from_numpy(scale_cam_image(ours64.numpy()))
    assert rel_err(scaled64, _their_fullgrad(copy.deepcopy(m64), x64, target)) <= 1e-5
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
    torch_err = max(rel_err(_their_fullgrad(copy.deepcopy(m32), x32, target), scaled64),
                    rel_err(_their_fullgrad(mcl, x32.contiguous(memory_format=torch.channels_last), target),
                            scaled64))
    err = rel_err(scale_cam_image(fv.fullgrad(m32, x32, target).numpy()), scaled64)
    assert err <= 2 * torch_err, f"float32: {err:.2e} > 2 x pytorch-grad-cam's {torch_err:.2e}"


# the whole zoo of test_zoo: every gradient CAM and FullGrad on torchvision's and timm's CNNs


@functools.lru_cache(maxsize=1)
def _zoo_model(family, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, side, layer = _zoo.build(family, name)
    x64 = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        target = m64(x64).argmax(1)
    return model, m64, x64, target, layer


# FullGrad's bias layers are exact Conv2d / BatchNorm2d types (pytorch-grad-cam's definition): these
# timm models have none (their norms are fused BatchNormAct2d modules), and ours says so
NO_BIAS_LAYERS = ("inception_v4", "repvgg_a2", "tf_efficientnet_lite0", "cspdarknet53")
# pytorch-grad-cam's FullGrad pairs biases in definition order with gradients in execution order,
# which differ in HRNet (it crashes there), so it is no reference for it
FULLGRAD_UNPAIRED = ("hrnet_w18_small",)


def _zoo_cases():
    for family, name in _zoo.ZOO:
        for method in [*CLASSES, "fullgrad"]:
            if method == "fullgrad" and name in FULLGRAD_UNPAIRED:
                continue
            yield pytest.param(family, name, method, id=f"{name}-{method}")


def _reference(method, model, layer, x, target):
    if method == "fullgrad":
        from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: F401 (imported after pgc())

        return torch.from_numpy(_their_fullgrad(copy.deepcopy(model), x, target))
    return _theirs(method, model, layer, x, target)


def _ours_for(method, model, x, target, layer):
    if method == "fullgrad":
        from pytorch_grad_cam.utils.image import scale_cam_image

        return torch.from_numpy(scale_cam_image(fv.fullgrad(model, x, target).detach().numpy()))
    return ours(method, model, x, target, layer, relu=method not in EIGEN)


@pytest.mark.zoo
@pytest.mark.skipif(not _zoo.has_timm(), reason="torchvision and timm are not installed")
@pytest.mark.parametrize("family,name,method", list(_zoo_cases()))
def test_cam_family_on_the_zoo(family, name, method):
    pgc()
    m32, m64, x64, target, layer = _zoo_model(family, name)
    if method == "fullgrad" and name in NO_BIAS_LAYERS:
        with pytest.raises(ValueError, match="fullgrad found no Conv2d or BatchNorm2d layer with a bias"):
            fv.fullgrad(m64, x64, target)
        return
    if method in EIGEN:  # at the smallest sides the last maps are 1 x 1, where a principal component is 0
        x64 = torch.randn(2, 3, 2 * x64.shape[-1], 2 * x64.shape[-1], generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
        with torch.no_grad():
            target = m64(x64).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _reference(method, m64, layer, x64, target)
        assert expected.abs().max() > 0, "a degenerate reference proves nothing"
        compare = sign_free_err if method in EIGEN else rel_err
        bar = 1e-9 if method not in (*EIGEN, "fullgrad") else 1e-5  # float32 inside pytorch-grad-cam
        for call in range(2):
            assert compare(_ours_for(method, m64, x64, target, layer), expected) <= bar, f"float64 call {call}"
        if method in EIGEN:
            return
        x32 = x64.float()
        mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
        torch_err = max(rel_err(_reference(method, m32, layer, x32, target), expected),
                        rel_err(_reference(method, mcl, layer, x32.contiguous(memory_format=torch.channels_last),
                                           target), expected))
        for call in range(2):
            err = rel_err(_ours_for(method, m32, x32, target, layer), expected)
            assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x pytorch-grad-cam's {torch_err:.2e}"

