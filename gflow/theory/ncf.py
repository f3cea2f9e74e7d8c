"""Kumar & Haupt: the neural correlation function (NCF) and the flow near and beyond the origin.

arXiv 2402.09226 (TMLR 2024), 2403.08121 (TMLR 2025), 2502.15952 (JMLR 2025); definitions as in
`../shared/science/science_B.md` §C. Items marked [R] there are reconstructions and are
implemented as written.

For a network H(x; w) homogeneous of order L (H(x; cw) = c^L H(x; w)) and a loss
L(w) = Σ_i ℓ(H(x_i; w), y_i), the gradient near w = 0 is ∇L(w) = −∇N(w) + O(‖w‖^{2L−1}) with

    N(u) = rᵀH(X; u),      r_i = −∂_1ℓ(0, y_i)      (r = y for ℓ = ½(p − y)²),

the NCF. Small weights w(0) = δ·w0 follow w(t) ≈ δ·φ(δ^{L−2} t) with φ̇ = ∇N(φ), whose direction
performs spherical gradient ascent on N [R]; it converges to a KKT point u* of max N(u) s.t.
‖u‖ = 1: ∇N(u*) = λu*, λ = L·N(u*) (Euler). The radius obeys ṙ = L·N(φ̂)·r^{L−1}.
Around a saddle w̄ the same holds for the small weights with the residual
r = −∂_1ℓ(H(X; w̄), y) (= y − H(X; w̄) for the square loss; 2402.09226).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import losses
from ..flow import simulate


def correlation_labels(loss, y, f=0.0, reduction="sum"):
    """r_i = −∂_1ℓ(f_i, y_i) (divided by n for `reduction="mean"`): the vector the NCF correlates
    the network with. At f = 0 this is y for ½(p − y)², 2y for (p − y)², y/2 for logistic; at the
    outputs f of a saddle it is the residual of 2402.09226."""
    ell = losses.get_loss(loss)
    y = jnp.asarray(y)
    f = jnp.broadcast_to(jnp.asarray(f, y.dtype), y.shape)
    r = -jax.vmap(jax.grad(ell))(f, y)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return r / y.shape[0] if reduction == "mean" else r


def ncf(apply_fn, X, r):
    """The NCF u ↦ N(u) = rᵀH(X; u) for a network `apply_fn(params, X)`."""
    X = jnp.asarray(X)
    r = jnp.asarray(r)
    if r.ndim != 1 or X.shape[0] != r.shape[0]:
        raise ValueError(f"r must have shape ({X.shape[0]},) to match X, got {r.shape}")

    def N(u):
        return jnp.dot(r, apply_fn(u, X))

    return N


def _unit(u):
    flat, unravel = ravel_pytree(u)
    norm = jnp.linalg.norm(flat)
    if not float(norm) > 0:
        raise ValueError("the starting point u0 is zero: the NCF ascent needs a direction")
    return unravel(flat / norm)


def kkt_residual(N, u):
    """‖(I − ûûᵀ)∇N(û)‖ / ‖∇N(û)‖: zero exactly at KKT points of max N on the unit sphere."""
    flat, unravel = ravel_pytree(u)
    uhat = flat / jnp.linalg.norm(flat)
    g, _ = ravel_pytree(jax.grad(N)(unravel(uhat)))
    tangent = g - jnp.dot(g, uhat) * uhat
    return jnp.linalg.norm(tangent) / jnp.linalg.norm(g)


def spherical_ascent(N, u0, *, step=1e-2, tol=1e-8, max_iter=200_000):
    """KKT point of max N on the sphere by projected gradient ascent
    u ← (u + η∇N(u)) / ‖u + η∇N(u)‖ from u0/‖u0‖, with η = `step`/‖∇N(û0)‖, until
    `kkt_residual` ≤ `tol`. Returns (u*, residual, iterations)."""
    flat0, unravel = ravel_pytree(_unit(u0))
    g0, _ = ravel_pytree(jax.grad(N)(unravel(flat0)))
    eta = step / jnp.linalg.norm(g0)

    def residual(flat):
        return kkt_residual(N, unravel(flat))

    def cond(state):
        flat, res, k = state
        return (res > tol) & (k < max_iter)

    def body(state):
        flat, _, k = state
        g, _ = ravel_pytree(jax.grad(N)(unravel(flat)))
        new = flat + eta * g
        new = new / jnp.linalg.norm(new)
        return new, residual(new), k + 1

    flat, res, k = jax.lax.while_loop(cond, body, (flat0, residual(flat0), 0))
    return unravel(flat), float(res), int(k)


def kkt_points(N, template, key, *, num_starts=64, step=5e-2, tol=1e-8, max_iter=100_000,
               same=1e-6):
    """The second-order positive KKT points of max N(u) s.t. ‖u‖ = 1 found from `num_starts`
    Gaussian starting points (drawn with `key`, shaped like the pytree `template`), independently
    of any trajectory: projected ascent u ← (u + η∇N(u))/‖·‖ (η = `step`/‖∇N(û0)‖ per start, all
    starts in one vmapped loop) until every residual ‖(I − ûûᵀ)∇N(û)‖/‖∇N(û)‖ ≤ `tol`.

    A converged point u is kept if N(u) > 0 and the Hessian of the Lagrangian on the tangent space,
    P(∇²N(u) − λI)P with λ = ⟨u, ∇N(u)⟩ (= L·N(u) by Euler) and P = I − uuᵀ, has no positive
    eigenvalue (a local maximum on the sphere); points with 1 − cos < `same` count once.
    Returns a list of dicts {"u": unit pytree, "N": N(u), "residual", "hits": starts that reached
    it}, by decreasing N. Raises if no start converges (raise `max_iter` or `step`)."""
    flat_t, unravel = ravel_pytree(template)
    starts = jax.random.normal(key, (num_starts, flat_t.size), flat_t.dtype)
    starts = starts / jnp.linalg.norm(starts, axis=1, keepdims=True)
    points, residual = _batched_ascent(N, unravel, starts, step, tol, max_iter)
    points, residual = np.asarray(points), np.asarray(residual)
    found = []
    for u, res in zip(points[residual <= tol], residual[residual <= tol]):
        for f in found:
            if 1 - float(np.dot(u, f["flat"])) < same:
                f["hits"] += 1
                break
        else:
            found.append({"flat": u, "residual": float(res), "hits": 1})
    if not found:
        raise ValueError(f"no start converged to a KKT point within {max_iter} iterations "
                         f"(smallest residual {residual.min():.2e} > tol {tol:g})")
    kept = []
    for f in found:
        u = jnp.asarray(f["flat"])
        value = float(N(unravel(u)))
        if value > 0 and _tangent_hessian_max(N, unravel, u) <= 1e-8 * abs(value):
            kept.append({"u": unravel(u), "N": value, "residual": f["residual"], "hits": f["hits"]})
    return sorted(kept, key=lambda k: -k["N"])


def _batched_ascent(N, unravel, starts, step, tol, max_iter):
    def grad(flat):
        return ravel_pytree(jax.grad(N)(unravel(flat)))[0]

    def residual(flat):
        g = grad(flat)
        return jnp.linalg.norm(g - jnp.dot(g, flat) * flat) / jnp.linalg.norm(g)

    grads, resids = jax.vmap(grad), jax.vmap(residual)
    eta = step / jnp.linalg.norm(grads(starts), axis=1, keepdims=True)

    def body(state):
        flat, _, k = state
        new = flat + eta * grads(flat)
        new = new / jnp.linalg.norm(new, axis=1, keepdims=True)
        return new, resids(new), k + 1

    def cond(state):
        _, res, k = state
        return jnp.any(res > tol) & (k < max_iter)

    flat, res, _ = jax.lax.while_loop(cond, body, (starts, resids(starts), 0))
    return flat, res


def _tangent_hessian_max(N, unravel, u):
    """Largest eigenvalue of P(∇²N(u) − λI)P on the tangent space of the sphere at unit u."""
    f = lambda flat: N(unravel(flat))
    g = jax.grad(f)(u)
    hess = jax.hessian(f)(u) - jnp.dot(g, u) * jnp.eye(u.size)
    basis = np.linalg.svd(np.eye(u.size) - np.outer(u, u))[0][:, : u.size - 1]
    return float(np.max(np.linalg.eigvalsh(basis.T @ np.asarray(hess) @ basis)))


def neuron_alignment(W, directions, *, floor=1e-2):
    """How close a block of neurons (rows of W, a separable net H = Σ_j σ(w_jᵀx)) is to the
    second-order positive KKT points of its NCF, given the unit per-neuron KKT directions e_k
    (rows of `directions`, e.g. from `kkt_points` on the one-neuron NCF).

    For a separable 2-homogeneous NCF those KKT points are the blocks whose nonzero neurons all
    point along one e_k, with any split of the norm; the nearest one to W along e_k has
    c_j = max(0, w_jᵀe_k), so the block's cosine to it is √(Σ_j max(0, w_jᵀe_k)²)/‖W‖.
    Returns (block cosine, max over k; per-neuron cosines to the nearest e_k of the neurons with
    ‖w_j‖ ≥ `floor`·max_j ‖w_j‖)."""
    W = np.asarray(W, float)
    E = np.asarray(directions, float).reshape(-1, W.shape[1])
    E = E / np.linalg.norm(E, axis=1, keepdims=True)
    proj = W @ E.T
    block = float(np.max(np.sqrt(np.sum(np.maximum(proj, 0) ** 2, axis=0))) / np.linalg.norm(W))
    norms = np.linalg.norm(W, axis=1)
    keep = norms >= floor * norms.max()
    return block, np.max(proj[keep] / norms[keep, None], axis=1)


def spherical_flow(N, u0, *, t1=1e4, tol=1e-8, rtol=1e-10):
    """KKT point of max N on the sphere from the ODE du/dt = (I − ûûᵀ)∇N(û), integrated with
    `gflow.simulate` as the gradient flow of −N(u/‖u‖), whose gradient is tangent to the sphere
    (so ‖u‖ = 1 is conserved). Stops where `kkt_residual` ≤ `tol`. Returns (u*, residual, t)."""
    objective, event = _sphere_problem(N, tol)
    traj = simulate(objective, _unit(u0), t1, rtol=rtol, event=event, max_steps=1_000_000,
                    save_params=False)
    u = _unit(traj.final_params)
    return u, float(kkt_residual(N, u)), float(traj.t_final)


def leading_order(N, u0, radius, *, t1=1e4, rtol=1e-10):
    """φ where ‖φ‖ first reaches `radius` under φ̇ = ∇N(φ), φ(0) = u0: the leading-order flow of
    w(t) ≈ δ·φ(δ^{L−2}t), so the weights at ‖w‖ = ρ are predicted to point along φ at
    radius ρ/δ (for L = 2 the map u0 ↦ φ commutes with scaling: it is the flow of −N itself from
    δ·u0 stopped at ρ). Integrated with `gflow.simulate` as the gradient flow of −N."""
    objective, event = _ncf_ascent(N)
    traj = simulate(objective, u0, t1, rtol=rtol, event=event, args=jnp.asarray(float(radius)),
                    max_steps=1_000_000, save_params=False)
    if str(traj.status) != "event":
        raise ValueError(f"‖φ‖ did not reach {radius} by t1 = {t1} (status {traj.status}): "
                         "raise t1, or check that N grows along the flow (N* > 0)")
    return traj.final_params


@functools.cache
def _ncf_ascent(N):
    def objective(u, radius):
        return -N(u)

    def event(u, radius):
        return jnp.linalg.norm(ravel_pytree(u)[0]) - radius

    return objective, event


@functools.cache
def _sphere_problem(N, tol):
    # cached per NCF so that repeated ascents from different starts share one compiled solve
    def objective(u):
        flat, unravel = ravel_pytree(u)
        return -N(unravel(flat / jnp.linalg.norm(flat)))

    def event(u):
        return kkt_residual(N, u) <= tol

    return objective, event


def escape_time(n_star, order, delta, rho):
    """Predicted time for ‖w‖ to grow from δ to ρ along a KKT direction with NCF value N* > 0,
    from ṙ = L·N*·r^{L−1} [R, science_B §C item 3]:

        L = 2:  t = ln(ρ/δ) / (2N*),
        L > 2:  t = (δ^{2−L} − ρ^{2−L}) / (L(L−2)N*)   → δ^{2−L}·τ*, τ* = 1/(L(L−2)N*).
    """
    if not n_star > 0:
        raise ValueError(f"N* must be positive for the weights to escape, got {n_star}")
    if not 0 < delta < rho:
        raise ValueError(f"need 0 < delta < rho, got delta={delta}, rho={rho}")
    if order == 2:
        return float(np.log(rho / delta) / (2 * n_star))
    if order > 2:
        return float((delta ** (2 - order) - rho ** (2 - order)) / (order * (order - 2) * n_star))
    raise ValueError(f"the homogeneity order L must be ≥ 2, got {order}")


def cosine(u, w):
    """cos(u, w) of two parameter pytrees as flat vectors."""
    a, _ = ravel_pytree(u)
    b, _ = ravel_pytree(w)
    return float(jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
