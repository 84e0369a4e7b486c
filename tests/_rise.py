"""RISE's CausalMetric (Petsiuk et al. 2018; evaluation.py of the RISE repository, which is not a
package), the reference of featvis_fast.metrics.deletion / insertion: its single_run as a loop over
steps, for one image, on the softmax of the model."""
from __future__ import annotations

import numpy as np
import torch


def causal_metric(mode: str, model: torch.nn.Module, img: torch.Tensor, explanation: np.ndarray, step: int,
                  substrate_fn, c: int) -> tuple[np.ndarray, float]:
    """RISE's single_run: mode "del" or "ins", img (1, 3, H, W), explanation (H, W) (distinct values:
    a stable sort then equals RISE's flip(argsort)), class c -> (scores (n_steps + 1,), auc)."""
    _, _, h, w = img.shape
    hw = h * w
    n_steps = (hw + step - 1) // step
    img = img.detach().contiguous().cpu()
    start, finish = (img.clone(), substrate_fn(img)) if mode == "del" else (substrate_fn(img), img.clone())
    scores = np.empty(n_steps + 1)
    order = np.argsort(-explanation.reshape(-1, hw), axis=1, kind="stable")
    for i in range(n_steps + 1):
        with torch.no_grad():
            scores[i] = torch.softmax(model(start), 1)[0, c].item()
        if i < n_steps:
            coords = order[:, step * i:step * (i + 1)]
            start.numpy().reshape(1, 3, hw)[0, :, coords] = finish.contiguous().numpy().reshape(1, 3, hw)[0, :, coords]
    auc = (scores.sum() - scores[0] / 2 - scores[-1] / 2) / (scores.shape[0] - 1)
    return scores, auc
