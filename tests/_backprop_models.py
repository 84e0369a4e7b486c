"""Test models for the backprop family: every rectifier spelling, and a hand-written reference
that applies the rules at each rectifier call site explicitly (float64, unpacked masks)."""
import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

INF = math.inf


class RuleReference(torch.autograd.Function):
    """y = rectifier(x); backward: the FeatureVis rule with the mask taken from x directly."""

    @staticmethod
    def forward(ctx, x, lo, hi, slope, rule):
        m = (x > lo) & (x < hi)
        ctx.save_for_backward(m)
        ctx.slope, ctx.rule = slope, rule
        if slope:
            return torch.where(x > 0, x, slope * x)
        return x.clamp(min=lo, max=None if hi == INF else hi)

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        s = ctx.slope
        f_mask = torch.where(m, 1.0, s).to(g.dtype)
        f_sign = torch.where(g > 0, 1.0, s).to(g.dtype)
        dx = {"gradient": g * f_mask, "deconvnet": g * f_sign, "guided": g * (f_mask * f_sign)}[ctx.rule]
        return dx, None, None, None, None


# name -> (lo, hi, slope, how the model calls it). `mod` gives the model's own (shared) modules.
FORMS = {
    "nn.ReLU": (0.0, INF, 0.0, lambda mod, x: mod.relu(x)),
    "nn.ReLU(inplace)": (0.0, INF, 0.0, lambda mod, x: mod.relu_inplace(x)),
    "F.relu": (0.0, INF, 0.0, lambda mod, x: F.relu(x)),
    "F.relu(inplace)": (0.0, INF, 0.0, lambda mod, x: F.relu(x, inplace=True)),
    "F.relu_": (0.0, INF, 0.0, lambda mod, x: F.relu_(x)),
    "torch.relu": (0.0, INF, 0.0, lambda mod, x: torch.relu(x)),
    "torch.relu_": (0.0, INF, 0.0, lambda mod, x: torch.relu_(x)),
    "Tensor.relu": (0.0, INF, 0.0, lambda mod, x: x.relu()),
    "Tensor.relu_": (0.0, INF, 0.0, lambda mod, x: x.relu_()),
    "nn.ReLU6": (0.0, 6.0, 0.0, lambda mod, x: mod.relu6(x)),
    "F.relu6": (0.0, 6.0, 0.0, lambda mod, x: F.relu6(x)),
    "nn.Hardtanh": (-1.0, 1.0, 0.0, lambda mod, x: mod.hardtanh(x)),
    "F.hardtanh(0,4)": (0.0, 4.0, 0.0, lambda mod, x: F.hardtanh(x, 0.0, 4.0)),
    "torch.clamp(min=0)": (0.0, INF, 0.0, lambda mod, x: torch.clamp(x, min=0)),
    "Tensor.clamp_(0,6)": (0.0, 6.0, 0.0, lambda mod, x: x.clamp_(min=0, max=6)),
    "Tensor.clamp_min(0)": (0.0, INF, 0.0, lambda mod, x: x.clamp_min(0)),
    "nn.LeakyReLU(0.1)": (0.0, INF, 0.1, lambda mod, x: mod.leaky(x)),
    "F.leaky_relu_(0.2)": (0.0, INF, 0.2, lambda mod, x: F.leaky_relu_(x, 0.2)),
}


class FormNet(nn.Module):
    """conv -> BN -> rectifier blocks, one rectifier spelling per block (`forms`), then a linear head.
    reference=rule computes the same function with RuleReference at every rectifier."""

    def __init__(self, forms, classes=7, width=6, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.forms, self.reference = list(forms), None
        chans = [3] + [width] * len(self.forms)
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(len(self.forms)))
        self.norms = nn.ModuleList(nn.BatchNorm2d(width) for _ in self.forms)
        self.head = nn.Linear(width, classes)
        self.relu, self.relu_inplace, self.relu6 = nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6()
        self.hardtanh, self.leaky = nn.Hardtanh(-1.0, 1.0), nn.LeakyReLU(0.1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(1, p[0].numel())))
            for bn in self.norms:  # pre-activations ~ N(1, 3^2): they straddle -1, 0, 1, 4 and 6
                bn.weight.copy_(3.0 + 0.5 * torch.randn(width, generator=gen))
                bn.bias.copy_(1.0 + 0.3 * torch.randn(width, generator=gen))
            self._calibrate(torch.randn(4, 3, 8, 8, generator=gen) * 2)
        self.eval()

    def _calibrate(self, x):
        """Running statistics = the statistics of a random batch, layer by layer (no blow-up)."""
        for conv, norm, form in zip(self.convs, self.norms, self.forms):
            z = conv(x)
            norm.running_mean.copy_(z.mean(dim=(0, 2, 3)))
            norm.running_var.copy_(z.var(dim=(0, 2, 3)) + 1e-3)
            lo, hi, slope, _ = FORMS[form]
            x = RuleReference.apply(norm.eval()(z), lo, hi, slope, "gradient")

    def forward(self, x):
        for conv, norm, form in zip(self.convs, self.norms, self.forms):
            x = norm(conv(x))
            lo, hi, slope, call = FORMS[form]
            x = RuleReference.apply(x, lo, hi, slope, self.reference) if self.reference else call(self, x)
        return self.head(x.mean(dim=(2, 3)))


def reference_attribution(model, x, target, rule, dtype=torch.float64):
    """The hand-written reference: same weights, the rule applied at each call site explicitly.
    Deep mixtures amplify rounding until a float32 activation lands on the other side of a kink;
    compare those with dtype=float32 (the same rounding as the model under test)."""
    ref_model = FormNet(model.forms, classes=model.head.out_features, width=model.head.in_features)
    ref_model.load_state_dict(model.state_dict())
    ref_model = ref_model.to(dtype).eval()
    ref_model.reference = rule
    x64 = x.detach().to(dtype).requires_grad_(True)
    out = ref_model(x64)
    target = torch.as_tensor(target).expand(x.shape[0])
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x64)
    return grad


class ReluOnlyNet(nn.Module):
    """Built only from nn.ReLU modules (Captum's supported case): convs, a residual add, pooling."""

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.post = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.layer = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(8, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
        self.eval()

    def forward(self, x):
        x = self.stem(x)
        x = self.post(x + self.body(x))
        return self.head(self.layer(self.pool(x)))


@contextlib.contextmanager
def rewrites_off():
    """The forward rewrites switched off inside (the reference a rewritten call must equal)."""
    from featvis_fast.backprop import set_forward_rewrites

    previous = set_forward_rewrites(False)
    try:
        yield
    finally:
        set_forward_rewrites(previous)
