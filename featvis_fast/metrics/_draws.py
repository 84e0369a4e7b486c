"""Random perturbation samples drawn once each, in sample order, for metrics that batch them.

A metric with n random samples per image draws sample k (for all B images at once) when the batch
that holds it is built. Drawing sample by sample keeps the random stream the same whatever the
batch size, and keeping a drawn sample until the batches have moved past it means an out-of-memory
retry of a batch (featvis_fast.engine.batches.run_batches) reuses its draws instead of
consuming new ones.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DrawnSamples(Generic[T]):
    """draw(k) for k = 0, 1, 2, ... called once each and in order; take(start, stop) -> samples start..stop.

    Args:
        draw: draw(k) -> sample k (e.g. a (B, C, H, W) noise tensor).
    """

    def __init__(self, draw: Callable[[int], T]) -> None:
        self.draw = draw
        self.kept: dict[int, T] = {}
        self.next = 0

    def take(self, start: int, stop: int) -> list[T]:
        """Samples start..stop-1; samples before `start` are released (batches only move forward)."""
        for k in [k for k in self.kept if k < start]:
            del self.kept[k]
        if start < self.next and start not in self.kept:
            raise RuntimeError(f"sample {start} was already released")
        while self.next < stop:
            self.kept[self.next] = self.draw(self.next)
            self.next += 1
        return [self.kept[k] for k in range(start, stop)]
