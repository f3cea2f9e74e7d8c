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
