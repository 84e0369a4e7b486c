"""The result of a dissection: per-unit thresholds, the IoU table, labels, counts per category,
top images, and the HTML report (dissection.report)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._dissection_reference import iou as iou_table
from .data import Concept


@dataclass
class DissectionResult:
    """thresholds (U,) float64; intersection, unit_area (U, K) and label_area (K,) int64 tallies;
    top_images / top_values (U, n): each unit's images by peak activation (dataset order);
    thumbnails {image: (3, 96, 96) uint8} and unit_masks {(unit, image): (96, 96) bool} for the report."""

    layer: str
    concepts: list[Concept]
    thresholds: torch.Tensor
    intersection: torch.Tensor
    unit_area: torch.Tensor
    label_area: torch.Tensor
    quantile: float
    iou_threshold: float
    top_images: torch.Tensor
    top_values: torch.Tensor
    thumbnails: dict = field(default_factory=dict, repr=False)
    unit_masks: dict = field(default_factory=dict, repr=False)
    n_images: int = 0

    @property
    def iou(self) -> torch.Tensor:
        """(U, K) float64 IoU of each unit with each concept."""
        return iou_table(self.intersection, self.unit_area, self.label_area)

    @property
    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(concept index (U,), its IoU (U,)): each unit's argmax concept (the first on ties)."""
        values, index = self.iou.max(dim=1)
        return index, values

    @property
    def interpretable(self) -> torch.Tensor:
        """(U,) bool: the best IoU reaches iou_threshold."""
        return self.best[1] >= self.iou_threshold

    @property
    def labels(self) -> list[str | None]:
        """Per unit: its concept's name, or None when it is not interpretable."""
        index, _ = self.best
        return [self.concepts[i].name if ok else None for i, ok in zip(index.tolist(), self.interpretable.tolist())]

    def counts_per_category(self) -> dict[str, int]:
        """Interpretable units per concept category (categories with none included, as 0)."""
        counts = Counter(self.concepts[i].category for i, ok in zip(self.best[0].tolist(), self.interpretable.tolist())
                         if ok)
        return {cat: counts.get(cat, 0) for cat in dict.fromkeys(c.category for c in self.concepts)}

    def save_report(self, directory: str | Path) -> Path:
        """Write index.html, summary.png and the top images with their masks; returns index.html's path."""
        from .report import write_report

        return write_report(self, Path(directory))
