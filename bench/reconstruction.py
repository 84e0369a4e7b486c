"""Reconstruction: featvis_fast against the eager PyTorch loops it replaces, side by side.

Per configuration, images x steps per second of
  ours    the fused loop (featvis::ascent_step, forward stopped at the objective's layer, lean
          backward, forward rewrites, channels-last, CPU cache): Maximization / Inversion
  eager   the Lucid-style loop with the same objective, transforms, regularizers and random draws
          (featvis_fast.reconstruction._eager.maximize_eager: the whole model with hooks,
          autograd, torch.optim.Adam / SGD); for inversion, FeatureVis' loop in PyTorch
          (forward to the layer, autograd, normalized gradient, regularizer gradients, momentum)
  stergiou for class-agnostic, the reference's per-step procedure (see class_agnostic_config)
and the fused step's own time (the op alone on the same tensors) as a share of our step, with
its GB/s against the copy bandwidth measured in the same run. Ours: a run is built and takes one
step (setup, the rewrite plan), then --steps steps are timed. Eager (a function of the step
count): after a warm-up call, the difference of calls with 1 and 1 + --steps steps (setup and
the first step cancel). Medians of --repeats.

    python bench/reconstruction.py [--device cpu|cuda] [--steps N] [--repeats N] [--batches 16 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import copy_bandwidth, environment, median_seconds, write_results  # noqa: E402

import featvis_fast as fv  # noqa: E402
from featvis_fast._ascent_reference import Regularizers, regularizer_values  # noqa: E402
from featvis_fast.models import IMAGENET_STD, extract  # noqa: E402
from featvis_fast.reconstruction import objectives as obj  # noqa: E402
from featvis_fast.reconstruction._ascent import StepSettings  # noqa: E402
from featvis_fast.reconstruction._eager import maximize_eager  # noqa: E402
from featvis_fast.reconstruction.invert import Inversion, featurevis_settings  # noqa: E402
from featvis_fast.reconstruction.maximize import Maximization  # noqa: E402

LAYER = "_blocks.10"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ours_step_seconds(make_run, device: str, steps: int, repeats: int) -> tuple[float, object]:
    """(median seconds per step of a built and warmed run, the run)."""
    per = []
    for _ in range(repeats):
        run = make_run()
        run.run(1)
        _sync(device)
        t0 = time.perf_counter()
        run.run(steps)
        _sync(device)
        per.append((time.perf_counter() - t0) / steps)
    return statistics.median(per), run


def eager_step_seconds(run_steps, device: str, steps: int, repeats: int) -> float:
    """Median over repeats of (time of 1 + steps steps - time of 1 step) / steps, after a warm-up."""
    run_steps(1)
    per = []
    for _ in range(repeats):
        times = []
        for k in (1, 1 + steps):
            _sync(device)
            t0 = time.perf_counter()
            run_steps(k)
            _sync(device)
            times.append(time.perf_counter() - t0)
        per.append((times[1] - times[0]) / steps)
    return statistics.median(per)


def maximize_config(model, device, batch, size, kind):
    channels = extract(model, torch.zeros(1, 3, 64, 64, device=device), LAYER).shape[1]
    goal = obj.Each([obj.Channel(LAYER, c % channels) for c in range(batch)])  # batches past the width repeat
    if kind == "lucid":  # Lucid's defaults: FFT, standard transforms, Adam 0.05
        kw = dict(param="fft", transforms="standard")
        settings = StepSettings()
    else:  # pixels, jitter in the fused step, L2 + TV (Mahendran & Vedaldi / Yosinski style), Adam
        regs = {"l2": 1e-4, "tv": 1e-3}
        kw = dict(param="pixel", transforms="none")
        settings = StepSettings(jitter=8, regularizers=Regularizers(**regs))

    def ours():
        return Maximization(model, goal, size=size, settings=settings, **kw)

    def eager(k):
        return maximize_eager(model, goal, steps=k, size=size, jitter=settings.jitter,
                              regularizers=settings.regularizers, **kw)

    return ours, eager


def invert_config(model, device, batch, size):
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    settings = featurevis_settings(size, size)
    layer = "_blocks.6"
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def ours():
        return Inversion(model, x, layer, settings=settings)

    def eager(k):  # FeatureVis' loop, written in plain PyTorch
        with torch.no_grad():
            target = extract(model, x, layer)
        norm = target.pow(2).flatten(1).sum(1)
        u = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
        opt = torch.optim.SGD([u], lr=settings.lr, momentum=settings.momentum)
        for _ in range(k):
            a = extract(model, u / (255 * std), layer, grad=True)
            loss = ((a - target) ** 2).flatten(1).sum(1) / norm
            (g,) = torch.autograd.grad(loss.sum(), u)
            g = g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
            (r,) = torch.autograd.grad(regularizer_values(u, settings.regularizers).sum(), u)
            u.grad = g + r
            opt.step()
        return u

    return ours, eager


def class_agnostic_config(model, device, size, clusters=4):
    """Ours: ClassAgnostic on 20 views of the sample photos. Stergiou: the reference's per-step
    procedure in PyTorch: a new SGD(nesterov) each step, the centre mask rebuilt row by row in
    Python each step, the whole model with hooks, autograd, and every 10 steps the blur
    (scipy.ndimage) and TV denoise (scikit-image's Bregman) on the CPU, blended through the mask."""
    import numpy as np
    from scipy.ndimage import gaussian_filter
    from skimage.restoration import denoise_tv_bregman

    from featvis_fast.models import IMAGENET_MEAN, find_module
    from featvis_fast.reconstruction.class_agnostic import ClassAgnostic, barron_rho

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from reconstruction_figure import photo_set

    x = photo_set(fv.load_model()[1], size).to(device)
    layer = "_blocks.15"
    probe = ClassAgnostic(model, x, layer, 2001, size=size, clusters=clusters, per_cluster=4, pca=16)
    preset, penalty = probe.preset, probe.penalty
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def ours():
        return ClassAgnostic(model, x, layer, 2001, size=size, clusters=clusters, per_cluster=4, pca=16)

    def mask_rows(sigma):  # the reference's mask: a Python loop (here over rows, numpy within a row)
        m = np.zeros((size, size), dtype=np.float32)
        c = (size - 1) / 2
        for i in range(size):
            r = np.sqrt((i - c) ** 2 + (np.arange(size) - c) ** 2)
            m[i] = np.finfo(np.float64).eps ** ((r / (sigma * size / 512)) ** 2 / 2)
        return torch.from_numpy(m / m.max()).to(device)

    def stergiou(k):
        z = probe.initial.clone().requires_grad_(True)
        t, top = probe.goal.targets.to(device), probe.goal.channels.to(device)
        for step in range(1, k + 1):
            v = preset.at(step, 2001)
            mask = mask_rows(v.mask_sigma)
            opt = torch.optim.SGD([z], lr=v.lr, momentum=preset.momentum, nesterov=True)
            acts = {}
            hooks = [find_module(model, layer).register_forward_hook(lambda m, i, o: acts.setdefault("a", o)),
                     find_module(model, penalty).register_forward_pre_hook(lambda m, i: acts.setdefault("h", i[0]))]
            model(z)
            for h in hooks:
                h.remove()
            a = acts["a"].flatten(2).mean(2)
            loss = (-(a.gather(1, top) * t.gather(1, top)).sum(1) + v.penalty_weight * acts["h"].abs().flatten(1).sum(1)
                    + barron_rho(a - t).mean(1)).sum()
            opt.zero_grad()
            loss.backward()
            z.grad *= mask
            opt.step()
            if step % preset.filter_every == 0:
                with torch.no_grad():
                    pixels = (z * std + mean).clamp(0, 1).cpu().numpy()
                    m = mask.cpu().numpy()
                    blurred = np.stack([gaussian_filter(im, (0, v.blur_sigma, v.blur_sigma)) for im in pixels])
                    pixels = m * blurred + (1 - m) * pixels
                    denoised = np.stack([denoise_tv_bregman(im.transpose(1, 2, 0), weight=v.denoise_weight,
                                                            channel_axis=-1).transpose(2, 0, 1) for im in pixels])
                    pixels = m * denoised + (1 - m) * pixels
                    z.copy_((torch.from_numpy(pixels.astype(np.float32)).to(device) - mean) / std)
        return z

    return ours, stergiou


def fused_step_share(run, device: str, repeats: int) -> tuple[float, float]:
    """(seconds of one featvis::ascent_step on the run's tensors, bytes it moves)."""
    a, s, r = run.ascent, run.ascent.settings, run.ascent.settings.regularizers
    grad = torch.randn_like(a.crop, dtype=torch.float32)
    clip = s.clip or (1.0, 0.0)

    def step():
        return fv.ops.ascent_step(a.x, grad, a.offsets, a.m, a.v, a.offsets, 1, s.lr, s.optimizer, s.momentum,
                                  s.betas[0], s.betas[1], s.eps, s.normalize, r.l1, r.l2, r.lp, r.p, r.tv, r.beta,
                                  r.tv_eps, clip[0], clip[1], *a.crop_size, a.backend)

    seconds = median_seconds(step, device, repeats=20)
    states = 2 if s.optimizer == "adam" else 1
    moved = a.x.numel() * 4 * (2 + 2 * states) + a.crop.numel() * 4 * 2  # x in/out, states in/out, grad, crop
    return seconds, moved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    env = environment(a.device)
    model = fv.load_model(device=a.device)[0]
    ceiling = copy_bandwidth(a.device, nbytes=1 << 28 if a.device == "cpu" else 1 << 30)
    rows = []
    configs = [(f"maximize {LAYER} channels, Lucid defaults (FFT, standard transforms, Adam)", b,
                *maximize_config(model, a.device, b, a.size, "lucid")) for b in a.batches]
    configs += [(f"maximize {LAYER} channels, pixels + jitter 8 + L2/TV", a.batches[0],
                 *maximize_config(model, a.device, a.batches[0], a.size, "pixel"))]
    configs += [("invert _blocks.6, FeatureVis preset", b, *invert_config(model, a.device, b, a.size))
                for b in a.batches[:1]]
    configs += [("class-agnostic _blocks.15, Stergiou preset vs its per-step procedure (10-step cycle)", 4,
                 *class_agnostic_config(model, a.device, a.size))]
    for name, batch, ours, eager in configs:
        steps = 10 if name.startswith("class-agnostic") else a.steps  # one filter cycle
        t_ours, run = ours_step_seconds(ours, a.device, steps, a.repeats)
        t_eager = eager_step_seconds(eager, a.device, steps, a.repeats)
        fused_s, moved = fused_step_share(run, a.device, a.repeats)
        row = {"config": name, "batch": batch, "size": a.size, "ours_images_steps_per_s": batch / t_ours,
               "eager_images_steps_per_s": batch / t_eager, "speedup": t_eager / t_ours,
               "fused_step_ms": fused_s * 1e3, "fused_step_share": fused_s / t_ours,
               "fused_step_gb_s": moved / fused_s / 1e9, "copy_gb_s": ceiling / 1e9}
        rows.append(row)
        print(f"{name:70s} B={batch:<3d} ours {row['ours_images_steps_per_s']:7.2f}  eager "
              f"{row['eager_images_steps_per_s']:7.2f} img*steps/s  x{row['speedup']:.2f}  fused step "
              f"{row['fused_step_ms']:.2f} ms ({100 * row['fused_step_share']:.1f}% of a step, "
              f"{row['fused_step_gb_s']:.1f} GB/s of {row['copy_gb_s']:.1f})", flush=True)
    lines = [f"# Reconstruction, {env['device']}, torch {env['torch']}, {env['date']}", "",
             f"{a.size}x{a.size}, EfficientNet-Lite0. Ours: a built run takes one step, then {a.steps} steps are "
             f"timed; eager: (time of 1 + {a.steps} steps - time of 1 step) / {a.steps} after a warm-up call "
             f"(class-agnostic: 10 steps, one filter cycle). Medians of {a.repeats}. Copy bandwidth of this run: "
             f"{ceiling / 1e9:.1f} GB/s.", "",
             "| configuration | batch | ours (img*steps/s) | eager (img*steps/s) | speedup | fused step "
             "| share of a step | fused GB/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['batch']} | {r['ours_images_steps_per_s']:.2f} | "
                     f"{r['eager_images_steps_per_s']:.2f} | {r['speedup']:.2f}x | {r['fused_step_ms']:.2f} ms | "
                     f"{100 * r['fused_step_share']:.1f}% | {r['fused_step_gb_s']:.1f} |")
    paths = write_results("reconstruction", a.device, env, rows, "\n".join(lines) + "\n")
    print("wrote", *paths)


if __name__ == "__main__":
    main()
