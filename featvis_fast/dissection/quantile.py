"""Exact per-unit top quantiles over a stream of activation batches, and the top-N images per unit.

Network Dissection's threshold T_u is the top-q quantile of unit u's activations over the whole
dataset (Bau et al. 2017; NetDissect-Lite estimates it with a sketch). Here it is exact, with
memory that does not grow with the dataset beyond what the quantile itself needs: with n values
per unit known in advance (images x positions), numpy.quantile(values, 1 - q) (linear
interpolation) reads only the order statistics at ascending ranks floor(p) and ceil(p),
p = (1 - q)(n - 1), which are among the top k = n - floor(p) values. Each batch is merged into
a running top-k per unit (torch.topk over the kept values and the batch's), so the threshold is
computed from exactly the values it depends on. Ranks of ties do not matter (equal values).
With q = 0.005, k is about 0.5% of n: memory grows with the dataset, at 0.5% of its activations
(plus one buffer of the same size). New values are first collected in that buffer and merged
(one topk) when it fills, so the cost per value stays constant. The values
are compared as float64, as numpy.quantile of the float64 values does.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def kept_count(n: int, q: float) -> int:
    """How many of the largest values the quantile needs (see the module docstring)."""
    return n - math.floor((1.0 - q) * (n - 1))


class StreamingTopQuantile:
    """update(acts (B, U, h, w)) per batch; result() -> (U,) float64 thresholds, equal to
    numpy.quantile(all values of the unit, 1 - q). total: values per unit over the whole stream."""

    def __init__(self, units: int, total: int, q: float, device) -> None:
        if not 0 < q < 1:
            raise ValueError(f"quantile must be in (0, 1), got {q!r}")
        if total < 1:
            raise ValueError("no activations to take a quantile of: the dataset is empty")
        self.units, self.total, self.q = units, total, q
        self.k = kept_count(total, q)
        self.top = torch.empty(units, 0, device=device)
        self.pending: list[torch.Tensor] = []
        self.pending_size = 0
        self.seen = 0

    def update(self, acts: torch.Tensor) -> None:
        flat = acts.detach().float().transpose(0, 1).reshape(self.units, -1)
        self.seen += flat.shape[1]
        if self.seen > self.total:
            raise ValueError(f"the stream holds more than the {self.total} values per unit it was sized for")
        self.pending.append(flat)
        self.pending_size += flat.shape[1]
        if self.pending_size >= max(self.k, 1 << 16):
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        merged = torch.cat([self.top, *self.pending], dim=1)
        self.pending, self.pending_size = [], 0
        self.top = torch.topk(merged, min(self.k, merged.shape[1]), dim=1, sorted=False).values

    def kept(self) -> torch.Tensor:
        """(U, <= k) the values kept so far (to gather from every process)."""
        self._flush()
        return self.top

    def merge(self, top: torch.Tensor, seen: int) -> None:
        """Take every process's kept values (concatenated along dim 1) and how many values they saw
        in all: the top k of the union is the top k of the whole stream."""
        self.pending, self.pending_size = [], 0
        self.top = torch.topk(top, min(self.k, top.shape[1]), dim=1, sorted=False).values
        self.seen = seen

    def result(self) -> torch.Tensor:
        self._flush()
        if self.seen != self.total:
            raise ValueError(f"the stream held {self.seen} values per unit, {self.total} were announced")
        desc = torch.sort(self.top.double(), dim=1, descending=True).values.cpu().numpy()
        p = (1.0 - self.q) * (self.total - 1)
        lo_rank, hi_rank = math.floor(p), math.ceil(p)
        a = desc[:, self.total - 1 - lo_rank]
        b = desc[:, self.total - 1 - hi_rank]
        t = p - lo_rank
        # numpy's _lerp, so that the result equals numpy.quantile bit for bit
        diff = b - a
        value = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
        return torch.from_numpy(np.asarray(value, dtype=np.float64))


class TopImages:
    """Per unit, the n images with the largest maximum activation (NetDissect's top images), ties
    broken by the lower image index (so that any batching or sharding gives the same list):
    update(acts (B, U, h, w), first image index); merge(values, indices) of other processes."""

    def __init__(self, units: int, n: int, device) -> None:
        self.n = n
        self.values = torch.empty(units, 0, device=device)
        self.indices = torch.empty(units, 0, dtype=torch.long, device=device)

    def _keep(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        by_index = torch.sort(indices, dim=1, stable=True)
        values, indices = values.gather(1, by_index.indices), by_index.values
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :self.n]
        self.values, self.indices = values.gather(1, order), indices.gather(1, order)

    def update(self, acts: torch.Tensor, first: int) -> None:
        peak = acts.detach().float().flatten(2).amax(2).T  # (U, B)
        idx = torch.arange(first, first + acts.shape[0], device=peak.device).expand_as(peak)
        self._keep(torch.cat([self.values, peak], 1), torch.cat([self.indices, idx], 1))

    def merge(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        self._keep(values.to(self.values.device), indices.to(self.indices.device))

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.indices, self.values
