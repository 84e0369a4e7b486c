"""The image subsets ("facets") of class-agnostic feature visualization (Stergiou, "The Mind's
Eye: Visualizing Class-Agnostic Features of CNNs", ICIP 2021): global-average-pooled features of
a set of images at one layer -> PCA -> 2-D t-SNE -> k-means in the t-SNE plane; per cluster the
images nearest its centre, weighted softmax(1/d) by their distance d to it. A cluster's target
is the weighted sum of its images' features, its start image the weighted sum of the images.

PCA runs on the features' device (torch SVD, float64), t-SNE on the CPU (scikit-learn, seeded),
k-means on the CPU (scikit-learn, k-means++ and Lloyd, seeded): the same seed, the same facets.
Counts are clamped for small inputs: PCA components <= min(n, C), perplexity min(30, (n - 1) / 3)
(at least 1; t-SNE needs perplexity < n), clusters <= n, images per cluster <= the cluster's size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models import extract

PERPLEXITY = 30.0  # scikit-learn's default, which the reference used
SMALLEST_DISTANCE = 1e-12  # an image on a cluster's centre gets 1 / this (its weight all but 1)


@dataclass(frozen=True)
class Facets:
    """embedding: (B, 2) float64 t-SNE coordinates; labels: (B,) cluster of each image; centres:
    (K, 2); per cluster k: members[k] (n_k,) image indices nearest the centre first, distances[k]
    (n_k,) float64 and weights[k] = softmax(1 / distances[k]) (n_k,) float64. All on the CPU."""

    embedding: torch.Tensor
    labels: torch.Tensor
    centres: torch.Tensor
    members: list[torch.Tensor]
    distances: list[torch.Tensor]
    weights: list[torch.Tensor]


def gap_features(model: torch.nn.Module, images: torch.Tensor, layer: str, chunk: int = 16) -> torch.Tensor:
    """(B, C) float32: the layer's activation averaged over positions (global average pooling),
    computed `chunk` images at a time without gradients."""
    parts = []
    with torch.no_grad():
        for i in range(0, images.shape[0], chunk):
            a = extract(model, images[i:i + chunk], layer)
            if a.dim() < 2:
                raise ValueError(f"layer {layer!r} gives {tuple(a.shape)}; class-agnostic visualization needs "
                                 "(B, C, ...) activations")
            parts.append(a.float().flatten(2).mean(2) if a.dim() > 2 else a.float())
    return torch.cat(parts)


def pca_project(x: torch.Tensor, components: int) -> torch.Tensor:
    """(B, k) float64 projections of the centred rows of x (B, C) on their k = min(components, B, C)
    principal directions, each direction's sign fixed (its largest loading positive)."""
    x = x.double()
    k = max(1, min(components, x.shape[0], x.shape[1]))
    centred = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    vh = vh[:k]
    sign = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))
    return centred @ (vh * torch.where(sign == 0, torch.ones_like(sign), sign)).T


def tsne_embed(x: torch.Tensor, seed: int) -> np.ndarray:
    """(B, 2) float64 t-SNE embedding of the rows of x (scikit-learn, random_state=seed)."""
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if n < 2:
        return np.zeros((n, 2))
    perplexity = min(PERPLEXITY, max(1.0, (n - 1) / 3.0))
    perplexity = min(perplexity, n - 1 - 1e-6)
    data = x.detach().cpu().double().numpy()
    if data.shape[1] < 2:  # scikit-learn's PCA initialization needs two features
        data = np.concatenate([data, np.zeros((n, 2 - data.shape[1]))], axis=1)
    return TSNE(n_components=2, perplexity=perplexity, random_state=seed).fit_transform(data).astype(np.float64)


def soft_weights(distances: torch.Tensor) -> torch.Tensor:
    """softmax(1 / d) over one cluster's chosen images (d clamped to >= 1e-12), float64."""
    return torch.softmax(1.0 / distances.double().clamp_min(SMALLEST_DISTANCE), dim=0)


def find_facets(features: torch.Tensor, clusters: int, per_cluster: int, components: int, seed: int) -> Facets:
    """features (B, C) -> the facets (see Facets): PCA to `components`, t-SNE to 2-D, k-means
    with min(clusters, B) clusters, the min(per_cluster, n_k) members nearest each centre."""
    from sklearn.cluster import KMeans

    n = features.shape[0]
    k = min(clusters, n)
    embedding = tsne_embed(pca_project(features, components), seed)
    kmeans = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(embedding)
    labels = torch.from_numpy(kmeans.labels_.astype(np.int64))
    centres = torch.from_numpy(kmeans.cluster_centers_.astype(np.float64))
    points = torch.from_numpy(embedding)
    members, distances, weights = [], [], []
    for c in range(k):
        candidates = torch.nonzero(labels == c).flatten()
        if candidates.numel() == 0:  # k-means left it empty (repeated points): its nearest images
            candidates = torch.arange(n)
        d = torch.linalg.vector_norm(points[candidates] - centres[c], dim=1)
        order = torch.argsort(d, stable=True)[:per_cluster]
        members.append(candidates[order])
        distances.append(d[order])
        weights.append(soft_weights(d[order]))
    return Facets(points, labels, centres, members, distances, weights)


def blend(x: torch.Tensor, facets: Facets) -> torch.Tensor:
    """(K, ...) per cluster the weighted sum of its members' rows of x (B, ...)."""
    return torch.stack([torch.tensordot(w.to(device=x.device, dtype=x.dtype), x[idx.to(x.device)], dims=1)
                        for idx, w in zip(facets.members, facets.weights)])
