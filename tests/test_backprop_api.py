"""Public API of the backprop family: Captum parity on nn.ReLU-only models, Grad-CAM, LRP,
targets and seeds, errors, the model left unchanged, and the memory the backward keeps."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn
from _backprop_models import ReluOnlyNet
from conftest import kernel_backends

import featvis_fast as fv
from featvis_fast.backprop import Unit

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture
def model():
    return ReluOnlyNet()


@pytest.fixture
def x():
    return torch.randn(3, 3, 15, 17, generator=torch.Generator().manual_seed(0))


TARGET = torch.tensor([0, 3, 4])


def _captum(cls, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*args).attribute(**kwargs)


def assert_close(a, b, tol=1e-5):
    assert b.abs().max() > 0
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_captum_parity_gradient_methods(model, x, backend):
    assert_close(fv.saliency(model, x, TARGET, abs=True, backend=backend),
           _captum(captum_attr.Saliency, model, inputs=x, target=TARGET))
    assert_close(fv.guided_backprop(model, x, TARGET, backend=backend),
           _captum(captum_attr.GuidedBackprop, model, inputs=x, target=TARGET))
    assert_close(fv.deconvnet(model, x, TARGET, backend=backend),
           _captum(captum_attr.Deconvolution, model, inputs=x, target=TARGET))


@pytest.mark.parametrize("layer", ["stem.0", "layer.0"])
def test_captum_parity_gradcam_and_guided_gradcam(model, x, layer):
    module = dict(model.named_modules())[layer]
    theirs = _captum(captum_attr.LayerGradCam, model, module, inputs=x, target=TARGET)
    assert_close(fv.gradcam(model, x, TARGET, layer, relu=False), theirs[:, 0])
    theirs_relu = _captum(captum_attr.LayerGradCam, model, module, inputs=x, target=TARGET, relu_attributions=True)
    assert_close(fv.gradcam(model, x, TARGET, layer), theirs_relu[:, 0])
    assert_close(fv.guided_gradcam(model, x, TARGET, layer),
           _captum(captum_attr.GuidedGradCam, model, module, inputs=x, target=TARGET))


def test_captum_style_classes_match_captum(model, x):
    from featvis_fast import backprop as bp

    assert_close(bp.GuidedBackprop(model).attribute(x, target=TARGET),
           _captum(captum_attr.GuidedBackprop, model, inputs=x, target=TARGET))
    assert_close(bp.Saliency(model).attribute(x, target=TARGET),
           _captum(captum_attr.Saliency, model, inputs=x, target=TARGET))
    assert_close(bp.Deconvolution(model).attribute(x, target=TARGET),
           _captum(captum_attr.Deconvolution, model, inputs=x, target=TARGET))
    layer = model.layer[0]
    assert_close(bp.LayerGradCam(model, layer).attribute(x, target=TARGET),
           _captum(captum_attr.LayerGradCam, model, layer, inputs=x, target=TARGET))
    assert_close(bp.GuidedGradCam(model, layer).attribute(x, target=TARGET),
           _captum(captum_attr.GuidedGradCam, model, layer, inputs=x, target=TARGET))


def test_gradcam_shapes_and_upsampling(model, x):
    cam = fv.gradcam(model, x, TARGET, "layer.0")
    assert cam.shape == (3, 7, 8) and bool((cam >= 0).all())
    up = fv.gradcam(model, x, TARGET, "layer.0", upsample=True)
    assert up.shape == (3, 15, 17)
    expected = torch.nn.functional.interpolate(cam[:, None], size=(15, 17), mode="bilinear", align_corners=False)[:, 0]
    assert_close(up, expected)


def test_lrp_conserves_relevance_without_bias():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.ReLU(inplace=True),
                              torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 5, bias=False)).eval()
    x = torch.randn(4, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 3])
    relevance = fv.lrp(net, x, target, eps=1e-9)
    assert relevance.shape == x.shape
    logits = net(x).gather(1, target[:, None])[:, 0].detach()
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), logits, rtol=1e-4, atol=1e-6)


def test_lrp_matches_a_layer_by_layer_reference():
    """R_in = a * W^T (R_out / (z + eps * sign z)) written out for conv -> relu -> linear."""
    torch.manual_seed(1)
    conv, lin = torch.nn.Conv2d(2, 4, 3), torch.nn.Linear(4 * 4 * 4, 3)
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Flatten(), lin).eval().double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    eps = 0.1
    stab = lambda z: z + eps * torch.where(z >= 0, 1.0, -1.0).double()  # noqa: E731
    z1 = conv(x)
    a1 = torch.relu(z1).flatten(1)
    z2 = lin(a1)
    r2 = torch.zeros_like(z2)
    r2[:, 2] = z2[:, 2]
    r1 = a1 * ((r2 / stab(z2)) @ lin.weight)  # relevance at the relu output = at its input
    s1 = r1.view_as(z1) / stab(z1)
    expected = x * torch.nn.grad.conv2d_input(x.shape, conv.weight, s1)
    assert_close(fv.lrp(net, x, 2, eps=eps).detach(), expected.detach(), tol=1e-10)


def test_targets_index_tensor_callable_and_none_agree(model, x):
    by_tensor = fv.saliency(model, x, torch.tensor([2, 2, 2]))
    assert torch.equal(fv.saliency(model, x, 2), by_tensor)
    assert torch.equal(fv.saliency(model, x, lambda out: out[:, 2]), by_tensor)
    predicted = model(x).argmax(1)
    assert torch.equal(fv.saliency(model, x, None), fv.saliency(model, x, predicted))


def test_activation_seed_scales_by_the_activation(model, x):
    onehot = fv.saliency(model, x, TARGET)
    seeded = fv.saliency(model, x, TARGET, grad_seed="activation")
    logits = model(x).gather(1, TARGET[:, None])[:, 0].detach()
    assert_close(seeded, onehot * logits[:, None, None, None])


def test_unit_targets_stop_at_the_layer(model, x):
    acts = fv.extract(model, x, "body.2")
    flat = int(acts[:, 5].sum(0).argmax())
    pos = divmod(flat, acts.shape[3])  # a position where channel 5 is active
    # whole channel map, one-hot seed: gradient of the map's sum
    leaf = x.clone().requires_grad_()
    calls = []
    handle = model.head.register_forward_hook(lambda *a: calls.append(1))
    try:
        ours = fv.guided_backprop(model, x, ("body.2", 5))
        plain = fv.saliency(model, x, Unit("body.2", 5, pos))
    finally:
        handle.remove()
    assert not calls, "the forward pass must stop at the unit's layer"
    assert ours.abs().sum() > 0
    with torch.enable_grad():
        out = {}
        h = model.body[2].register_forward_hook(lambda m, i, o: out.setdefault("a", o))
        model(leaf)
        h.remove()
        (expected,) = torch.autograd.grad(out["a"][:, 5, pos[0], pos[1]].sum(), leaf)
    assert_close(plain, expected)


@pytest.mark.parametrize("bad,match", [
    (dict(target=5), "out of range.*5 classes"),
    (dict(target=torch.tensor([0, 1])), "2 entries for a batch of 3"),
    (dict(target=torch.tensor([0, 1, 9])), "target 9 is out of range"),
    (dict(target=torch.tensor([0.5, 1, 2])), "LongTensor"),
    (dict(target=("no.such.layer", 0)), "unknown layer name 'no.such.layer'"),
    (dict(target=("body.2", 99)), "channel 99 is out of range"),
    (dict(target=("body.2", 1, (40, 0))), "position .* out of range"),
    (dict(target=lambda out: out.sum()), "callable target must return"),
    (dict(target=0, grad_seed="bogus"), "grad_seed must be one of"),
])
def test_bad_targets_give_clear_errors(model, x, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fv.guided_backprop(model, x, **bad)


def test_bad_inputs_give_clear_errors(model, x):
    with pytest.raises(ValueError, match="NaN or infinite"):
        fv.saliency(model, x.clone().fill_(float("nan")), 0)
    with pytest.raises(TypeError, match="floating-point"):
        fv.saliency(model, x.long(), 0)
    with pytest.raises(ValueError, match="unknown layer name 'layr.0'.*'layer.0'"):
        fv.gradcam(model, x, 0, "layr.0")
    with pytest.raises(ValueError, match="needs a layer name"):
        fv.gradcam(model, x, 0)
    with pytest.raises(ValueError, match="eps must be"):
        fv.lrp(model, x, 0, eps=-1)


def _snapshot(model):
    return {
        "state": copy.deepcopy(model.state_dict()),
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "types": [type(m) for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
    }


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k in before["state"]:
        assert torch.equal(after["state"][k], before["state"][k]), k
    for key in ("requires_grad", "training", "types", "hooks"):
        assert after[key] == before[key], key
    assert all(g is None for g in after["grads"])
    assert not torch._C._is_torch_function_mode_enabled(), "a TorchFunctionMode was left on the stack"


def test_model_unchanged_after_calls_and_after_exceptions(model, x):
    before = _snapshot(model)
    fv.guided_backprop(model, x, TARGET)
    fv.deconvnet(model, x, TARGET)
    fv.gradcam(model, x, TARGET, "layer.0")
    fv.guided_gradcam(model, x, TARGET, "layer.0")
    fv.lrp(model, x, TARGET)
    fv.guided_backprop(model, x, ("body.2", 1))
    _assert_unchanged(model, before)
    with pytest.raises(ValueError):
        fv.guided_backprop(model, x, 99)  # raised after the forward pass
    _assert_unchanged(model, before)

    def boom(module, inputs, output):
        raise RuntimeError("boom inside the forward pass")

    handle = model.layer[0].register_forward_hook(boom)
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        fv.gradcam(model, x, 0, "body.0")
    handle.remove()
    before["hooks"] = _snapshot(model)["hooks"]
    _assert_unchanged(model, before)


def _saved_bytes(run):
    """Bytes of the distinct storages autograd saves for backward while run() executes."""
    seen, total = set(), [0]

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in seen and t.numel() > 0:
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total[0]


def test_max_pooling_saves_only_its_indices_and_stays_exact():
    """A 2-D max pool inside an attribution saves its winners' indices, not its input (the
    rectifier output before it would otherwise stay alive); the gradient is autograd's bit for bit."""
    from featvis_fast.backprop import RectifierRuleMode

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Flatten(),
                          nn.Linear(16 * 12 * 13, 4)).eval()
    x = torch.randn(4, 3, 23, 25, generator=gen)
    pooled = 4 * 16 * 12 * 13
    def ours():
        with RectifierRuleMode(0, "torch"):
            model(x.clone().requires_grad_())

    saved = _saved_bytes(ours)
    budget = 8 * pooled + 4 * 16 * 23 * 25 // 8 + 4096 + 4 * sum(p.numel() for p in model.parameters())
    assert saved < budget < _saved_bytes(lambda: model(x.clone().requires_grad_())), \
        f"saved {saved} bytes: more than indices (int64), masks and weights ({budget})"
    xr = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    (expected,) = torch.autograd.grad(model(xr)[:, 2].sum(), xr)
    for _ in range(2):
        assert torch.equal(fv.saliency(model, x, 2), expected)


def test_backward_keeps_far_less_memory_than_autograd(model):
    """Saved-for-backward bytes: bit-packed masks and weights only, vs activations in autograd."""
    x = torch.randn(8, 3, 32, 32)
    plain = _saved_bytes(lambda: model(x.clone().requires_grad_()))
    from featvis_fast.backprop import RectifierRuleMode

    def ours():
        with RectifierRuleMode(2, "torch"):
            model(x.clone().requires_grad_())

    lean = _saved_bytes(ours)
    assert lean * 4 < plain, f"saved {lean} bytes vs autograd's {plain}"


def test_efficientnet_lite0_guided_uses_the_relu6_rule():
    """EfficientNet-Lite0 has only ReLU6 rectifiers (one module reused per block): guided backprop
    must differ from the gradient and equal a module-hook reference applying the ReLU6 rule."""
    from _backprop_models import RuleReference

    model, preprocess = fv.load_model()
    x = preprocess(fv.sample_image("chelsea"), size=96)
    ours = fv.guided_backprop(model, x, 285)
    plain = fv.saliency(model, x, 285)
    assert not torch.allclose(ours, plain, atol=1e-6)

    def to_rule(module, inputs, output):
        return RuleReference.apply(inputs[0], 0.0, 6.0, 0.0, "guided")

    relu6 = [m for m in model.modules() if isinstance(m, torch.nn.ReLU6)]
    assert relu6, "EfficientNet-Lite0 should use nn.ReLU6"
    handles = [m.register_forward_hook(to_rule) for m in relu6]
    try:
        leaf = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(model(leaf)[:, 285].sum(), leaf)
    finally:
        for h in handles:
            h.remove()
    assert_close(ours, expected, tol=1e-5)


def test_models_that_view_activations_still_work():
    """4-D CPU inputs run channels-last for speed; a model that .view()s a feature map cannot,
    and must get the same attribution from the contiguous layout."""
    class ViewNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 5 * 5, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            return self.fc(h.view(h.shape[0], -1))

    torch.manual_seed(0)
    net, x = ViewNet().eval(), torch.randn(2, 3, 7, 7)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        net(x.contiguous(memory_format=torch.channels_last))
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(net(leaf)[:, 1].sum(), leaf)
    got = fv.saliency(net, x, 1)
    assert got.is_contiguous()
    assert_close(got, expected)
    assert fv.gradcam(net, x, 1, "conv").shape == (2, 5, 5)


def test_batch_norm_backward_folds_only_into_single_consumer_convs():
    """conv -> BN pairs fold the BN's backward scale into the conv's weight; a conv whose output
    also feeds something else keeps the BN's own backward. Gradients equal plain autograd's."""
    from featvis_fast.backprop import RectifierRuleMode
    from featvis_fast.engine.lean import fold_batch_norms

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
            self.c2, self.b2 = torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.BatchNorm2d(6)

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            z = self.c2(h)
            return (self.b2(z) + z).mean(dim=(2, 3))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for bn in (net.b1, net.b2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    leaf = x.clone().requires_grad_()
    with RectifierRuleMode(0, "torch"):
        out = net(leaf)[:, 1].sum()
    assert fold_batch_norms(out) == 1
    (ours,) = torch.autograd.grad(out, leaf)
    plain_leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(net(plain_leaf)[:, 1].sum(), plain_leaf)
    assert_close(ours, expected)
