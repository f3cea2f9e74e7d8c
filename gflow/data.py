"""Datasets: synthetic constructions from the papers and real data read locally.

No data is downloaded at run time: `digits` uses the copy bundled with scikit-learn.
"""

import numpy as np


def _binary_labels(labels, classes):
    if len(classes) != 2 or classes[0] == classes[1]:
        raise ValueError(f"classes must name two different classes, got {classes!r}")
    keep = np.isin(labels, classes)
    if not keep.any():
        raise ValueError(f"no examples of classes {classes!r} in the data")
    y = np.where(labels[keep] == classes[0], 1.0, -1.0)
    if np.all(y == y[0]):
        raise ValueError(f"only one of the classes {classes!r} is present: need both")
    return keep, y


def digits(classes=(0, 1), *, center=True, normalize=False):
    """scikit-learn's bundled 8×8 digits, two classes as labels +1 (first) and −1 (second).

    Pixels are scaled to [0, 1]; `center` subtracts the mean image of the selected examples
    (as Min et al. 2024 centre MNIST), `normalize` scales each example to unit norm.
    Returns `(X, y)` with X of shape (n, 64) and y in {±1}.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep, y = _binary_labels(bunch.target, tuple(classes))
    X = bunch.data[keep].astype(np.float64) / 16.0
    if center:
        X = X - X.mean(axis=0, keepdims=True)
    if normalize:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def _check_labels(X, y):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X has shape {X.shape} and y has shape {y.shape}: need X of shape (n, d) and y of "
            "shape (n,) with the same n"
        )
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X or y contains NaN or inf: clean the data first")
    if not np.all(np.abs(y) == 1):
        raise ValueError("labels y must be ±1")
    if np.all(y == y[0]):
        raise ValueError("y has a single class: the separation μ needs both labels ±1")
    return X, y


def separation(X, y):
    """μ̂ = min_{i≠j} cos(y_i x_i, y_j x_j), the separation of Min, Mallada & Vidal (2024, §2).

    μ̂ > 0 means every same-label pair is positively and every opposite-label pair negatively
    correlated; a negative μ̂ means the data is not μ-separated for any μ > 0.
    """
    X, y = _check_labels(X, y)
    norms = np.linalg.norm(X, axis=1)
    if np.any(norms == 0):
        raise ValueError("X has a zero row: its direction, and so the separation, is undefined")
    Z = (y / norms)[:, None] * X
    G = Z @ Z.T
    np.fill_diagonal(G, np.inf)
    return float(G.min())


def _radii(key, n, radii):
    if radii is None:
        return np.ones(n)
    r = np.asarray(radii, dtype=np.float64)
    if r.ndim == 0:
        r = np.full(n, float(r))
    elif r.shape == (2,) and n != 2:
        low, high = r
        if not 0 < low <= high:
            raise ValueError(f"radii range (X_min, X_max) must satisfy 0 < X_min ≤ X_max, got {radii}")
        r = np.random.default_rng(key).uniform(low, high, n)
    if r.shape != (n,) or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(
            f"radii must be None, a positive number, a range (X_min, X_max) or n={n} positive "
            f"numbers, got {radii!r}"
        )
    return r


def separated(key, n, d, mu, *, n_pos=None, radii=None, equiangular=True):
    """Binary data `(X, y)` of separation exactly μ (Min, Mallada & Vidal 2024, §2).

    Points are x_i = y_i r_i Q z_i with a random orthogonal Q and radii r_i (`radii`: None for
    1, a number, a range (X_min, X_max) drawn uniformly, or n values), so y_i x_i/‖x_i‖ = Q z_i
    and μ̂ = min_{i≠j} ⟨z_i, z_j⟩ (computed by `separation`).

    - `equiangular=True` (needs d ≥ n + 1): z_i = √μ e_0 + √(1−μ) e_i, so every pair has cosine exactly μ.
    - `equiangular=False` (any d ≥ 3, e.g. n > d): z_i = √μ e_0 + √(1−μ) g_i with unit g_i ⟂ e_0 drawn in the
      non-negative orthant, so ⟨g_i, g_j⟩ ≥ 0 and every cosine is ≥ μ; g_0 = e_1, g_1 = e_2
      are orthogonal, so the minimum is exactly μ.

    The first `n_pos` (default n // 2) points have y = +1, the rest −1. `key` is an integer
    seed or a numpy Generator. Returns X of shape (n, d) and y of shape (n,).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an integer ≥ 2, got {n!r}")
    if not isinstance(d, int) or isinstance(d, bool) or d < 3:
        raise ValueError(f"d must be an integer ≥ 3, got {d!r}")
    if not (np.isfinite(mu) and 0 < mu <= 1):
        raise ValueError(f"mu must lie in (0, 1], got {mu}: it is a cosine between points")
    if equiangular and d < n + 1:
        raise ValueError(
            f"the equiangular construction needs d ≥ n + 1, got d={d}, n={n}: raise d or pass "
            "equiangular=False for the orthant variant"
        )
    n_pos = n // 2 if n_pos is None else n_pos
    if not isinstance(n_pos, int) or not 1 <= n_pos <= n - 1:
        raise ValueError(f"n_pos must be an integer in [1, n−1] = [1, {n - 1}] so both classes occur, got {n_pos!r}")
    rng = np.random.default_rng(key)
    k = n + 1 if equiangular else d
    G = np.zeros((n, k - 1))
    if equiangular:
        G[:, :n] = np.eye(n)
    else:
        G = np.abs(rng.standard_normal((n, k - 1)))
        G[:2] = np.eye(2, k - 1)
        G /= np.linalg.norm(G, axis=1, keepdims=True)
    Z = np.concatenate([np.full((n, 1), np.sqrt(mu)), np.sqrt(1 - mu) * G], axis=1)
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    Q *= np.sign(np.diag(R))  # Haar-distributed orthogonal matrix
    y = np.where(np.arange(n) < n_pos, 1.0, -1.0)
    r = _radii(rng, n, radii)
    X = (y * r)[:, None] * (Z @ Q[:k])
    return X, y


def hyperplane(n, d, seed=0):
    """Data that is *not* well separated: x_i ~ N(0, I_d) normalised to the unit sphere, labels
    y_i = sign(⟨u, x_i⟩) from a random hyperplane u ~ N(0, I_d) (the switching-surface issue's
    problem). `seed` is an integer or a numpy Generator; returns X (n, d) and y (n,) in ±1."""
    for name, value in (("n", n), ("d", d)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, np.where(X @ rng.standard_normal(d) > 0, 1.0, -1.0)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """An array from an IDX file (the MNIST format), plain or gzip-compressed (by magic bytes).

    Header: two zero bytes, a type code (0x08 ubyte … 0x0E float64), the number of dimensions
    k, then k big-endian int32 sizes; the data follows in C order, big-endian.
    """
    import gzip

    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file: bad magic number {raw[:4]!r}")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(shape))
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes) but "
            f"{len(raw) - offset} bytes follow: the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype, count=count, offset=offset).reshape(shape)


def _find_idx(path, stem):
    from pathlib import Path

    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (Path(path) / name).is_file():
            return Path(path) / name
    return None


def mnist(path, classes=(0, 1), n=None, *, split="train", center=True, seed=0):
    """MNIST from local IDX files in directory `path`, two classes as labels +1 / −1.

    Reads `{split}-images-idx3-ubyte` and `{split}-labels-idx1-ubyte` (optionally `.gz`;
    split "train" or "t10k"). Pixels are scaled to [0, 1]; `n` draws a random subsample
    (seeded by `seed`); `center` subtracts the mean image of the selected examples (Min et al.
    2024 centre by the mean image). Returns X of shape (n, 784) and y in {±1}.
    """
    if split not in ("train", "t10k"):
        raise ValueError(f"split must be 'train' or 't10k', got {split!r}")
    stems = (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
    found = [_find_idx(path, stem) for stem in stems]
    if None in found:
        raise ValueError(
            f"MNIST files not found in {path!r}: expected {stems[0]} and {stems[1]} "
            "(optionally gzipped, .gz) from the MNIST distribution"
        )
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST images have shape {images.shape} and labels {labels.shape}: expected "
            "(N, rows, cols) and (N,)"
        )
    keep, y = _binary_labels(labels, tuple(classes))
    X = images[keep].reshape(int(keep.sum()), -1).astype(np.float64) / 255.0
    if n is not None:
        if not isinstance(n, int) or not 2 <= n <= len(y):
            raise ValueError(f"n must be an integer in [2, {len(y)}] (examples of {classes}), got {n!r}")
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
        X, y = X[idx], y[idx]
        if np.all(y == y[0]):
            raise ValueError(f"the subsample of n={n} holds one class only: raise n or change seed")
    if center:
        X = X - X.mean(axis=0, keepdims=True)
    return X, y
