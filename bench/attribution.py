"""The gradient and CAM families against Captum 0.9 and pytorch-grad-cam 1.5, side by side in one run.

Per model and method: the median wall time of one call (after a warm-up call) of ours and of the
reference implementation on the same batch, and their ratio. Models: torchvision's ResNet-50 and
MobileNetV2 (random weights, realistic batch-norm statistics: tests/_zoo.py). References and
their batching, each at the best of the settings given (--captum-batches, --pgc-batches):

- integrated gradients (steps), SmoothGrad (samples, around the gradient), input x gradient and
  GradientSHAP: Captum's IntegratedGradients (internal_batch_size), NoiseTunnel(Saliency)
  (nt_samples_batch_size), InputXGradient, GradientShap;
- Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Eigen-CAM, EigenGrad-CAM at the last block:
  pytorch-grad-cam's classes (their output is min-max normalized and resized to the input; ours
  with upsample=True is resized);
- Score-CAM and Ablation-CAM (one forward per channel and image): pytorch-grad-cam's ScoreCAM /
  AblationCAM (batch_size), at an earlier layer with fewer channels (--score-layer early) or at
  the CAM layer pytorch-grad-cam's documentation uses (--score-layer cam: ResNet-50 layer4,
  MobileNetV2 features.18). Score-CAM rows also time the bare forwards both tools must run (the
  B x K masked copies through the plain model at the reference's best batch size): the reference's
  time over theirs bounds the speed-up of any implementation that runs them.

Integrated gradients and SmoothGrad rows also time the convolutions alone: the forward and input
gradient of every convolution and linear layer for all steps x B rows at our rows per pass,
channels-last, each layer on its own (bench: convolutions_alone). The reference's time over
theirs is the speed-up left if batch norms, rectifiers, additions and all bookkeeping cost nothing.

    python bench/attribution.py [--device cpu|cuda] [--batch 8] [--size 224] [--steps 50]
        [--score-batch 1] [--score-layer early|cam] [--repeats 3] [--methods integrated_gradients ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _zoo  # noqa: E402
from _common import environment, median_seconds, write_results  # noqa: E402

import featvis_fast as fv  # noqa: E402
from featvis_fast.backprop import _rows  # noqa: E402

CAM_LAYERS = {"resnet50": "layer4", "mobilenet_v2": "features.18"}
SCORE_LAYERS = {"resnet50": "layer1", "mobilenet_v2": "features.14"}  # 256 and 160 channels
GRADIENT = ("input_x_gradient", "integrated_gradients", "smoothgrad", "gradient_shap")
CAMS = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
        "hirescam": "HiResCAM", "eigencam": "EigenCAM", "eigengradcam": "EigenGradCAM"}
SCORE_CAMS = {"scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}


def build(name: str, size: int, device: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return _zoo.realistic(getattr(_zoo.torchvision_models(), name)(weights=None), size).to(device)


def gradient_calls(method, model, x, target, a):
    """(ours, {setting: reference}) zero-argument calls."""
    from captum.attr import GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    baselines = torch.zeros(4, *x.shape[1:], device=x.device)
    if method == "input_x_gradient":
        return (lambda: fv.input_x_gradient(model, x, target),
                {"": lambda: InputXGradient(model).attribute(x, target=target)})
    if method == "integrated_gradients":
        ig = IntegratedGradients(model)
        return (lambda: fv.integrated_gradients(model, x, target, steps=a.steps),
                {f"internal_batch_size={n}": (lambda n=n: ig.attribute(x, target=target, n_steps=a.steps,
                                                                       internal_batch_size=n))
                 for n in a.captum_batches})
    if method == "smoothgrad":
        nt = NoiseTunnel(Saliency(model))
        per_call = {f"nt_samples_batch_size={max(1, n // x.shape[0])}": max(1, n // x.shape[0])
                    for n in a.captum_batches}
        return (lambda: fv.smoothgrad(fv.saliency, model, x, target, samples=a.steps, sigma=0.15),
                {k: (lambda n=n: nt.attribute(x, nt_type="smoothgrad", nt_samples=a.steps, stdevs=0.15,
                                              target=target, abs=False, nt_samples_batch_size=n))
                 for k, n in per_call.items()})
    gs = GradientShap(model)
    return (lambda: fv.gradient_shap(model, x, target, baselines, samples=a.steps),
            {"": lambda: gs.attribute(x, baselines=baselines, n_samples=a.steps, target=target)})


def cam_calls(method, model, x, target, layer, batches):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = dict(model.named_modules())[layer]
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    cls = getattr(pytorch_grad_cam, {**CAMS, **SCORE_CAMS}[method])
    ours = getattr(fv, method)
    if method in SCORE_CAMS:
        def reference(n):
            cam = cls(model=model, target_layers=[module], **({"batch_size": n} if method == "ablationcam" else {}))
            cam.batch_size = n
            return lambda: cam(input_tensor=x, targets=targets)

        return (lambda: ours(model, x, target, layer, upsample=True, progress=False),
                {f"batch_size={n}": reference(n) for n in batches})
    cam = cls(model=model, target_layers=[module])
    return lambda: ours(model, x, target, layer, upsample=True), {"": lambda: cam(input_tensor=x, targets=targets)}


def bare_forwards(model, x, layer, batch_size):
    """A call running the B x K forwards of Score-CAM's masked copies through the plain model
    (x's images repeated; the values do not change the time), batch_size at a time."""
    module = dict(model.named_modules())[layer]
    shapes = []
    handle = module.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    copies = x.repeat_interleave(shapes[0][1], dim=0)

    def run():
        with torch.no_grad():
            for start in range(0, copies.shape[0], batch_size):
                model(copies[start:start + batch_size])

    return run


def convolutions_alone(model, x, rows_total, rows_per_pass, repeats):
    """Seconds the forward and input gradient of every convolution and linear layer the model
    runs take for `rows_total` rows, `rows_per_pass` at a time, channels-last (each layer timed
    alone on random values, median of `repeats`, summed): the arithmetic a gradient at every row
    needs, before batch norms, rectifiers and additions."""
    layers = []

    def note(module, inputs, _output):
        layers.append((module, inputs[0].shape[1:]))

    handles = [m.register_forward_hook(note) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    per_pass = 0.0
    for module, shape in layers:
        inp = torch.randn(rows_per_pass, *shape, device=x.device)
        if inp.dim() == 4:
            inp = inp.contiguous(memory_format=torch.channels_last)
        weight = module.weight.detach()
        if isinstance(module, nn.Conv2d):
            conv = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups)
            out = F.conv2d(inp, weight, None, **conv)
            grad = torch.randn_like(out)

            def layer(inp=inp, weight=weight, conv=conv, grad=grad):
                F.conv2d(inp, weight, None, **conv)
                torch.ops.aten.convolution_backward(grad, inp, weight, None, list(conv["stride"]),
                                                    list(conv["padding"]), list(conv["dilation"]), False, [0, 0],
                                                    conv["groups"], [True, False, False])
        else:
            grad = torch.randn(rows_per_pass, weight.shape[0], device=x.device)

            def layer(inp=inp, weight=weight, grad=grad):
                F.linear(inp, weight)
                grad @ weight

        per_pass += median_seconds(layer, x.device, repeats, warmup=1)
    return per_pass * rows_total / rows_per_pass


def _floor(row) -> float:
    return row.get("bare_forwards_s", row.get("convolutions_s"))


def _floor_name(row) -> str:
    return "bare forwards" if "bare_forwards_s" in row else "convolutions alone"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=list(CAM_LAYERS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=50, help="integration steps / noise samples / SHAP samples")
    p.add_argument("--score-batch", type=int, default=1, help="images for Score-CAM and Ablation-CAM")
    p.add_argument("--score-layer", choices=("early", "cam"), default="early",
                   help="Score-CAM / Ablation-CAM layer: an earlier one with fewer channels, or the CAM layer")
    p.add_argument("--captum-batches", type=int, nargs="+", default=[32, 128], help="rows per Captum pass")
    p.add_argument("--pgc-batches", type=int, nargs="+", default=[16, 64], help="pytorch-grad-cam batch sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default="attribution", help="results file stem (bench/results/NAME-DEVICE-DATE.*)")
    p.add_argument("--methods", nargs="+", default=[*GRADIENT, *CAMS, *SCORE_CAMS])
    a = p.parse_args()
    warnings.simplefilter("ignore")
    env = environment(a.device)
    rows = []
    for name in a.models:
        model = build(name, a.size, a.device)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(a.batch, 3, a.size, a.size, generator=gen).to(a.device)
        with torch.no_grad():
            target = model(x).argmax(1)
        for method in a.methods:
            if method in GRADIENT:
                ours, refs = gradient_calls(method, model, x, target, a)
                batch, setting = a.batch, f"{a.steps} steps/samples" if method != "input_x_gradient" else ""
            elif method in CAMS:
                ours, refs = cam_calls(method, model, x, target, CAM_LAYERS[name], a.pgc_batches)
                batch, setting = a.batch, CAM_LAYERS[name]
            else:
                xs, ts = x[:a.score_batch], target[:a.score_batch]
                layer = (SCORE_LAYERS if a.score_layer == "early" else CAM_LAYERS)[name]
                ours, refs = cam_calls(method, model, xs, ts, layer, a.pgc_batches)
                batch, setting = a.score_batch, layer
            t_ours = median_seconds(ours, a.device, a.repeats, warmup=1)
            t_refs = {k: median_seconds(f, a.device, a.repeats, warmup=1) for k, f in refs.items()}
            best = min(t_refs, key=t_refs.get)
            row = {"model": name, "method": method, "batch": batch, "size": a.size, "setting": setting,
                   "ours_s": t_ours, "reference_s": t_refs[best], "reference_setting": best,
                   "speedup": t_refs[best] / t_ours, "reference_all_s": t_refs}
            if method in ("integrated_gradients", "smoothgrad"):
                per_pass = _rows.rows_per_pass(None, a.batch, torch.device(a.device))
                row["convolutions_s"] = convolutions_alone(model, x, a.batch * a.steps, per_pass, a.repeats)
                row["ceiling"] = t_refs[best] / row["convolutions_s"]
            if method == "scorecam":
                n = int(best.split("=")[1])
                row["bare_forwards_s"] = median_seconds(bare_forwards(model, xs, layer, n), a.device, a.repeats,
                                                        warmup=1)
                row["ceiling"] = t_refs[best] / row["bare_forwards_s"]
            rows.append(row)
            bound = f"  ({_floor_name(row)} {_floor(row):.3f} s: ceiling x{row['ceiling']:.2f})" \
                if "ceiling" in row else ""
            print(f"{name:13s} {method:21s} B={batch:<3d} ours {t_ours:8.3f} s  reference {t_refs[best]:8.3f} s "
                  f"({best or 'default'})  x{row['speedup']:.2f}{bound}", flush=True)
    lines = [f"# bench/attribution.py on {env['device']} ({env['date']}, torch {env['torch']})", "",
             f"{a.size} px, median of {a.repeats} calls after one warm-up; reference: Captum 0.9 (gradient family), "
             "pytorch-grad-cam 1.5.7 (CAMs), at its best setting of those tried.", "",
             "| model | method | batch | setting | ours s | reference s | reference setting | speed-up | "
             "floor s (ceiling) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = f"{_floor_name(r)} {_floor(r):.3f} ({r['ceiling']:.2f}x)" if "ceiling" in r else ""
        lines.append(f"| {r['model']} | {r['method']} | {r['batch']} | {r['setting']} | {r['ours_s']:.3f} | "
                     f"{r['reference_s']:.3f} | {r['reference_setting'] or 'default'} | {r['speedup']:.2f}x | "
                     f"{bound} |")
    print("wrote", *write_results(a.name, a.device, env, rows, "\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
