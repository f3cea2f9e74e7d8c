"""What researchers use without gflow: plain gradient descent (optax) and scipy's `solve_ivp`.

Both return or accept the same objects as `gflow.simulate`, so flow and baselines are compared
at equal times on the same problem.
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.integrate

from . import status as _status
from .flow import scale_aware_atol
from .options import check_params as _check_params
from .options import check_times as _check_times
from .trajectory import Trajectory


def gradient_descent(objective, params0, lr, t1, saveat=None, *, t0=0.0):
    """Full-batch gradient descent θ_{k+1} = θ_k − lr·∇L(θ_k) with `optax.sgd`, up to time t1.

    GD is the explicit Euler method of the gradient flow: step k sits at time t0 + k·lr, and its
    error against the flow is O(lr). Saved values are taken at the step nearest to each time in
    `saveat` (default `[t0, t1]`). Returns a `gflow.Trajectory` with `num_grad_evals` = steps.
    """
    _check_params(params0)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    ts = _check_times(t0, t1, saveat)
    ts = np.array([t0, t1]) if ts is None else np.asarray(ts)
    steps = np.rint((ts - t0) / lr).astype(np.int64)
    return _gd(objective, params0, jnp.asarray(lr), jnp.asarray(np.diff(steps, prepend=0)), t0)


@eqx.filter_jit
def _gd(objective, params0, lr, segment_steps, t0):
    opt = optax.sgd(lr)
    grad = jax.grad(objective)

    def step(_, carry):
        params, state = carry
        updates, state = opt.update(grad(params), state, params)
        return optax.apply_updates(params, updates), state

    def segment(carry, n):
        carry = jax.lax.fori_loop(0, n, step, carry)
        return carry, (carry[0], objective(carry[0]))

    (final, _), (params, loss) = jax.lax.scan(segment, (params0, opt.init(params0)), segment_steps)
    total = jnp.sum(segment_steps)
    dtype = jnp.result_type(loss)
    finite = jnp.all(jnp.isfinite(loss))
    zero = jnp.asarray(0)
    return Trajectory(
        ts=t0 + jnp.cumsum(segment_steps) * lr,
        params=params,
        loss=loss,
        observables={},
        status_code=jnp.where(finite, _status.SUCCESS, _status.NONFINITE).astype(jnp.int32),
        t_final=jnp.asarray(t0 + total * lr, dtype),
        t_event=jnp.asarray(jnp.nan, dtype),
        final_params=final,
        num_steps=total,
        num_accepted_steps=total,
        num_rejected_steps=zero,
        num_grad_evals=total,
    )


def two_layer_numpy_grad(X, y, loss="exponential", reduction="sum", activation="relu"):
    """∇L for the two-layer network f = σ(XWᵀ)v written in plain numpy (no JAX).

    Independent of gflow's autodiff path, for scipy references and cross-checks. Supports
    ReLU (σ'(0) = 0) and the exponential, logistic (factor 2) and square (½) losses. Returns
    `grad(W, v) -> (dL/dW, dL/dv)`.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if activation != "relu":
        raise ValueError("two_layer_numpy_grad supports activation='relu' only")
    scale = 1.0 if reduction == "sum" else 1.0 / len(y)
    dloss = {
        "exponential": lambda f: -y * np.exp(-y * f),
        "logistic": lambda f: -2.0 * y / (1.0 + np.exp(y * f)),
        "square": lambda f: f - y,
    }
    if loss not in dloss:
        raise ValueError(f"loss must be one of {sorted(dloss)}, got {loss!r}")

    def grad(W, v):
        Z = X @ W.T
        A = np.maximum(Z, 0.0)
        g = scale * dloss[loss](A @ v)  # dL/df, shape (n,)
        dv = A.T @ g
        dW = ((g[:, None] * (Z > 0)) * v[None, :]).T @ X
        return dW, dv

    return grad


def scipy_flow(grad_fn, params0, t1, *, t0=0.0, saveat=None, method="DOP853", rtol=1e-9, atol=None):
    """Solve the gradient flow with `scipy.integrate.solve_ivp` from a numpy gradient.

    `grad_fn(params) -> grads` works on pytrees of numpy arrays shaped like `params0`.
    `atol=None` uses the same scale-aware rule as gflow (`gflow.flow.scale_aware_atol`).
    Returns `(ts, params_at_ts, info)` with info = {"nfev", "wall", "status", "message"}.

    The right-hand side is pure numpy: θ is split into views of the leaves (no JAX arrays,
    no device transfers), so the wall time is scipy's and the gradient's, as a user writes it.
    """
    leaves, treedef = jax.tree.flatten(params0)
    shapes = [np.shape(leaf) for leaf in leaves]
    splits = np.cumsum([int(np.prod(shape)) for shape in shapes])[:-1]

    def ravel(tree):
        return np.concatenate([np.ravel(np.asarray(leaf, dtype=np.float64)) for leaf in jax.tree.leaves(tree)])

    def unravel(theta):
        return jax.tree.unflatten(treedef, [x.reshape(s) for x, s in zip(np.split(theta, splits), shapes)])

    flat0 = ravel(params0)
    if atol is None:
        atol = float(scale_aware_atol(params0, rtol))

    def rhs(t, theta):
        return -ravel(grad_fn(unravel(theta)))

    ts = np.array([t0, t1]) if saveat is None else np.asarray(saveat, dtype=np.float64)
    start = time.perf_counter()
    sol = scipy.integrate.solve_ivp(rhs, (t0, t1), flat0, method=method, t_eval=ts, rtol=rtol, atol=atol)
    wall = time.perf_counter() - start
    params = [unravel(sol.y[:, k].copy()) for k in range(sol.y.shape[1])]
    info = {"nfev": sol.nfev, "wall": wall, "status": sol.status, "message": sol.message}
    return sol.t, params, info
