"""Float64 oracles shared by the tests."""
import math

import torch

from featvis_fast import _reference


def angular_bounds(x: torch.Tensor, slack: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Range of IFeaLiD's angular similarity for inner products within +-slack of x (float64).

    acos is ill-conditioned near 1, so a float32 kernel is judged in the cosine domain."""
    f = lambda v: 1.0 - torch.acos(v.clamp(0.0, 1.0)) * (2.0 / math.pi)  # noqa: E731
    return f(x - slack) - 1e-6, f(x + slack) + 1e-6


def assert_similarity_close(sim: torch.Tensor, features: torch.Tensor, queries: torch.Tensor, metric: int,
                            rtol: float = 2e-6) -> None:
    """sim (from a float32-accumulating kernel) against the float64 reference on the same stored values."""
    ref, _ = _reference.pixel_similarity(features, queries, metric, compute_dtype=torch.float64)
    assert sim.shape == ref.shape and sim.dtype == torch.float32
    assert bool(torch.isfinite(sim).all()), "non-finite (unwritten?) similarity values"
    f64 = features.double()
    if metric == _reference.ANGULAR:
        inner, _ = _reference.pixel_similarity(features, queries, _reference.INNER, compute_dtype=torch.float64)
        slack = rtol * 4 * (queries.double().abs() @ f64.abs()).max().item() + 1e-7
        lo, hi = angular_bounds(inner, slack)
        s = sim.double().cpu()
        ok = (s >= lo.cpu()) & (s <= hi.cpu())
        assert bool(ok.all()), f"angular similarity outside its bound at {int((~ok).sum())} places"
        return
    # Error bound of a float32 sum: proportional to the sum of |terms| and the length C.
    if metric == _reference.EUCLIDEAN:
        scale = ref.abs().max().item() + 1e-6
    else:
        scale = (queries.double().abs() @ f64.abs()).max().item() + 1e-6
    tol = rtol * max(1.0, math.sqrt(features.shape[0])) * scale
    err = (sim.double().cpu() - ref.cpu()).abs().max().item()
    assert err <= tol, f"max error {err:.3g} > {tol:.3g}"
