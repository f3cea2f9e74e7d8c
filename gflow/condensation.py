"""Condensation of input weights onto a few orientations (Zhou et al., NeurIPS 2022).

Zhou et al. measure condensation by eye on the heat map of D(u, v) = ûᵀv̂, the cosine similarity
of the input weights w_j = (w̄_j, b_j) (bias included), and conjecture at most 2p orientations in
the initial stage for an activation of multiplicity p. This module makes the count automatic,
as proposed in science_B §D [P] (a reconstruction: the paper gives no algorithm):

1. active set A = {j : ‖w_j‖ ≥ norm_cut · max_k ‖w_k‖};
2. greedily, by decreasing norm, each unassigned active neuron seeds a cluster of the unassigned
   neurons with ûᵀû_j ≥ cos_threshold (antipodes are distinct orientations); centroids are
   recomputed and every active neuron is reassigned once to its nearest centroid (or left alone
   if none is within cos_threshold);
3. K counts the clusters with ≥ 2 members and ≥ min_share·|A|; K_line merges counted clusters
   whose centroids agree up to sign (|cos| ≥ cos_threshold); the quality q is the share of A
   inside counted clusters;
4. `robustness` repeats the count over a grid of thresholds.
"""

from typing import NamedTuple

import numpy as np

COS_THRESHOLDS = (0.95, 0.98, 0.99, 0.995)
NORM_CUTS = (0.1, 0.2, 0.3)


class Condensation(NamedTuple):
    """The automatic orientation count of one weight matrix.

    - `num_orientations`: K, the number of counted clusters.
    - `num_lines`: K_line, counted clusters merged up to sign.
    - `quality`: q, the share of active neurons inside counted clusters.
    - `centroids`: (K, D) unit centroids of the counted clusters, largest first.
    - `sizes`: (K,) their member counts.
    - `labels`: (m,) index into `centroids` per neuron; −1 for inactive or uncounted neurons.
    - `num_active`: |A|.
    """

    num_orientations: int
    num_lines: int
    quality: float
    centroids: np.ndarray
    sizes: np.ndarray
    labels: np.ndarray
    num_active: int


def _unit(W):
    norms = np.linalg.norm(W, axis=-1, keepdims=True)
    return W / np.where(norms > 0, norms, 1.0)


def _check_W(W):
    W = np.asarray(W, dtype=float)
    if W.ndim != 2 or W.shape[0] < 1:
        raise ValueError(f"W must be a (neurons, features) matrix, got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("W contains NaN or inf: pass the weights of a finite trajectory")
    if not np.any(W):
        raise ValueError("W is zero: no neuron has an orientation")
    return W


def cosine_similarity(W):
    """D_jk = ŵ_jᵀŵ_k, the matrix Zhou et al. plot as a heat map, shape (m, m)."""
    U = _unit(_check_W(W))
    return U @ U.T


def heatmap_order(W):
    """Neuron order for the heat map: by the leading eigenvector of D (the authors' demo), which
    puts neurons of one orientation next to each other and antipodes at opposite ends."""
    _, vecs = np.linalg.eigh(cosine_similarity(W))
    return np.argsort(vecs[:, -1])


def condensation(W, cos_threshold=0.99, norm_cut=0.2, min_share=0.05) -> Condensation:
    """Count the condensed orientations of the rows of W (module docstring, steps 1–3)."""
    W = _check_W(W)
    if not 0 < cos_threshold < 1:
        raise ValueError(f"cos_threshold must lie in (0, 1), got {cos_threshold}")
    if not 0 <= norm_cut < 1:
        raise ValueError(f"norm_cut must lie in [0, 1), got {norm_cut}")
    norms = np.linalg.norm(W, axis=1)
    active = np.flatnonzero(norms >= norm_cut * norms.max())
    active = active[np.argsort(-norms[active], kind="stable")]
    U = _unit(W[active])

    seed_of = np.full(len(active), -1)
    for i in range(len(active)):
        if seed_of[i] < 0:
            seed_of[(seed_of < 0) & (U @ U[i] >= cos_threshold)] = i
    seeds = np.unique(seed_of)
    centroids = _unit(np.stack([U[seed_of == s].mean(axis=0) for s in seeds]))
    cos = U @ centroids.T
    nearest = np.argmax(cos, axis=1)
    # Neurons far from every centroid become their own (uncounted) cluster.
    label = np.where(cos[np.arange(len(active)), nearest] >= cos_threshold, nearest, -1)

    sizes = np.bincount(label[label >= 0], minlength=len(seeds))
    counted = np.flatnonzero((sizes >= 2) & (sizes >= min_share * len(active)))
    counted = counted[np.argsort(-sizes[counted], kind="stable")]
    centroids = np.zeros((len(counted), W.shape[1]))
    labels = np.full(W.shape[0], -1)
    for k, c in enumerate(counted):
        centroids[k] = _unit(U[label == c].mean(axis=0))
        labels[active[label == c]] = k
    return Condensation(
        num_orientations=len(counted),
        num_lines=_count_lines(centroids, cos_threshold),
        quality=float(sizes[counted].sum() / len(active)),
        centroids=centroids,
        sizes=sizes[counted],
        labels=labels,
        num_active=len(active),
    )


def _count_lines(centroids, cos_threshold):
    # Greedy merge of orientations that agree up to sign.
    lines = []
    for c in centroids:
        if not any(abs(c @ l) >= cos_threshold for l in lines):
            lines.append(c)
    return len(lines)


def robustness(W, cos_thresholds=COS_THRESHOLDS, norm_cuts=NORM_CUTS, min_share=0.05):
    """K, K_line and q over the grid cos_thresholds × norm_cuts (step 4), each an int/float
    array of shape (len(cos_thresholds), len(norm_cuts))."""
    grid = [[condensation(W, c, n, min_share) for n in norm_cuts] for c in cos_thresholds]
    return {
        "cos_thresholds": list(cos_thresholds),
        "norm_cuts": list(norm_cuts),
        "num_orientations": np.array([[r.num_orientations for r in row] for row in grid]),
        "num_lines": np.array([[r.num_lines for r in row] for row in grid]),
        "quality": np.array([[r.quality for r in row] for row in grid]),
    }


def plot_heatmap(W, ax, title=None):
    """Draw the cosine-similarity heat map of the rows of W on `ax` (Zhou et al., Fig. 2 style)."""
    order = heatmap_order(W)
    image = ax.imshow(cosine_similarity(W)[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(xticks=[], yticks=[], title=title or "")
    return image
