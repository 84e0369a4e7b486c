"""NetDissect-Lite's procedure in NumPy, per image and per unit as its feature_operation.py runs
it: the oracle of the dissection tests and the baseline of bench/dissection.py. Thresholds are
exact (numpy.quantile over every activation) and the upsampling is bilinear with PyTorch's
align_corners=False rule (NetDissect-Lite uses its own resize), so that the two agree exactly."""
import numpy as np


def _source(out_size: int, in_size: int):
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def upsample(a: np.ndarray, height: int, width: int) -> np.ndarray:
    y0, y1, wy = _source(height, a.shape[0])
    x0, x1, wx = _source(width, a.shape[1])
    a = a.astype(np.float64)
    rows = a[y0, :] * (1 - wy)[:, None] + a[y1, :] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def dissect(features: np.ndarray, masks: np.ndarray, annotated: np.ndarray, quantile: float = 0.005,
            iou_threshold: float = 0.04) -> dict:
    """features (N, U, h, w), masks (N, K, H, W) bool, annotated (N, K) bool -> thresholds, tallies,
    IoU (U, K), best concept per unit, interpretable flags."""
    n, u_count = features.shape[:2]
    k_count, height, width = masks.shape[1:]
    thresholds = np.quantile(features.transpose(1, 0, 2, 3).reshape(u_count, -1).astype(np.float64),
                             1 - quantile, axis=1)
    inter = np.zeros((u_count, k_count), np.int64)
    unit_area = np.zeros((u_count, k_count), np.int64)
    label_area = np.zeros(k_count, np.int64)
    for i in range(n):
        present = np.flatnonzero(annotated[i])
        for k in present:
            label_area[k] += masks[i, k].sum()
        for u in range(u_count):
            m = upsample(features[i, u], height, width) > thresholds[u]
            area = m.sum()
            for k in present:
                inter[u, k] += np.logical_and(m, masks[i, k]).sum()
                unit_area[u, k] += area
    union = unit_area + label_area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    best = iou.argmax(axis=1)
    return {"thresholds": thresholds, "intersection": inter, "unit_area": unit_area, "label_area": label_area,
            "iou": iou, "best": best, "interpretable": iou[np.arange(u_count), best] >= iou_threshold}
