"""Elementwise losses ℓ(f, y) on outputs f and labels y, and objectives L(θ) built from them.

Papers differ in the reduction: Min–Mallada–Vidal (2024) and Kumar–Haupt use a plain sum
(`reduction="sum"`), Boursier–Flammarion and Zhou et al. a mean (`reduction="mean"`).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import switching
from .switching import Switching


def exponential(f, y):
    """ℓ = exp(−y f)."""
    return jnp.exp(-y * f)


def logistic(f, y, factor=1.0):
    """ℓ = factor · log(1 + exp(−y f)); factor 2 makes −∂ℓ/∂f at f = 0 equal to y (Min 2024)."""
    return factor * jax.nn.softplus(-y * f)


def square(f, y, factor=0.5):
    """ℓ = factor · (f − y)²; factor ½ by default (Kumar–Haupt), 1 for Boursier–Flammarion's MSE."""
    return factor * (f - y) ** 2


def hinge(f, y, margin=1.0):
    """ℓ = max(0, margin − y f)."""
    return jnp.maximum(0.0, margin - y * f)


_REDUCTIONS = {"mean": jnp.mean, "sum": jnp.sum}

LOSSES = {"exponential": exponential, "logistic": logistic, "square": square, "hinge": hinge}


def get_loss(loss):
    """A loss from a name in `LOSSES` or a callable ℓ(f, y)."""
    if callable(loss):
        return loss
    try:
        return LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}: use one of {sorted(LOSSES)} or a function") from None


class Objective(eqx.Module):
    """L(θ) = reduce_i ℓ(apply_fn(θ, X)_i, y_i), with reduce "mean" or "sum" (`objective`).

    An `eqx.Module`: the data X, y are leaves, `apply_fn`, `loss` and `reduction` static, so an
    equal objective built twice (same functions, data of the same shapes) reuses the first
    one's compilation in `gflow.simulate`. `switching` is the closed-form `Switching` of a
    two-layer net with a piecewise-linear activation (`gflow.switching.for_objective`, built
    once by `objective`), else None (`simulate` then reads the kinks from the program,
    `gflow.kinks.find`)."""

    apply_fn: Callable = eqx.field(static=True)
    loss: Callable = eqx.field(static=True)
    X: jax.Array
    y: jax.Array
    reduction: str = eqx.field(static=True, default="mean")
    switching: Switching | None = None

    def __call__(self, params):
        return _REDUCTIONS[self.reduction](self.loss(self.apply_fn(params, self.X), self.y))


def objective(apply_fn, loss, X, y, reduction="mean") -> Objective:
    """L(θ) = reduce_i ℓ(apply_fn(θ, X)_i, y_i), with reduce "mean" or "sum" (an `Objective`).

    Checks the data once, here, so that a NaN or a shape mismatch is an error and not a silent
    NaN trajectory.
    """
    X = jnp.asarray(X)
    y = jnp.asarray(y)
    if X.ndim < 1 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X has shape {X.shape} and y has shape {y.shape}: need X of shape (n, ...) and y "
            "of shape (n,) with the same n"
        )
    if X.shape[0] == 0:
        raise ValueError("the dataset is empty (n = 0)")
    if not (np.all(np.isfinite(np.asarray(X))) and np.all(np.isfinite(np.asarray(y)))):
        raise ValueError("X or y contains NaN or inf: clean the data before building the objective")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    ell, reduce = get_loss(loss), _REDUCTIONS[reduction]
    return Objective(apply_fn, ell, X, y, reduction, switching.for_objective(apply_fn, ell, X, y, reduce))
