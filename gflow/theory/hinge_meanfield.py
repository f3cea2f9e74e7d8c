"""Pellegrini & Biroli, "An analytic theory of shallow networks dynamics for hinge loss
classification" (NeurIPS 2020, arXiv 2006.11209): the mean-field closure for γ(t).

The paper's §§2–3 equations were not retrieved; everything here is the reconstruction of
science_B §E [R], checked there against an independent numpy code.

Model: f(x) = (α/M) Σ_i a_i ReLU(w_i·x/√d), x ~ N(0, I_d), teacher labels y = sign(ŵ*·x), linear
hinge loss with margin h; u = 1[y f(x) < h] marks the unsatisfied examples. In the mean-field
limit (M, N → ∞) the perpendicular weights w⊥ are frozen and every node moves on a hyperbola,

    a(γ) = a₀ cosh γ + w∥₀ sinh γ,   w∥(γ) = w∥₀ cosh γ + a₀ sinh γ,

with one γ(t) for all nodes, fixed self-consistently:

    dγ/dt = ⟨u |x∥|⟩_t / (2α√d),
    f(x) = α F(x∥, q, γ),  F = E_{a₀,w₀}[a(γ) g(w∥(γ) x∥/√d; q)],
    g(m; q) = m Φ(m/√q) + √q φ(m/√q),   q = |x⊥|²/d ~ χ²_{d−1}/d.

F is odd and increasing in x∥, so the unsatisfied examples are |x∥| < x*(q, γ) with
αF(x*, q, γ) = h, and ⟨u|x∥|⟩ = E_q[2(φ(0) − φ(x*))]: the closure is the scalar ODE

    dγ/dt = E_q[φ(0) − φ(x*(q, γ))] / (α√d),   unsatisfied fraction = E_q[2Φ(x*) − 1].

Here the x∥ integral is done exactly and E_q by generalised Gauss–Laguerre quadrature (science_B
suggests Monte Carlo over (x∥, q); the quadrature gives a right-hand side smooth in γ, which
the adaptive solver needs), E_{a₀,w₀} by a 20×20 Gauss–Hermite rule.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from scipy import special

X_MAX = 12.0  # beyond this |x∥| has Gaussian mass < 1e−32: x* is capped here
PHI0 = 1.0 / np.sqrt(2 * np.pi)  # φ(0)


def _check(d, alpha, h):
    if not isinstance(d, int) or d < 2:
        raise ValueError(f"d must be an integer ≥ 2, got {d!r}")
    if not alpha > 0 or not h > 0:
        raise ValueError(f"alpha and h must be positive, got alpha={alpha}, h={h}")


def node_quadrature(n=20):
    """(a₀, w∥₀, weight) of the n×n Gauss–Hermite rule for two independent N(0, 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / np.sqrt(2 * np.pi)
    a0, w0 = np.meshgrid(x, x, indexing="ij")
    return jnp.asarray(a0.ravel()), jnp.asarray(w0.ravel()), jnp.asarray(np.outer(w, w).ravel())


def q_quadrature(d, n=12):
    """(q, weight) for q = |x⊥|²/d with |x⊥|² ~ χ²_{d−1}: generalised Gauss–Laguerre in s = |x⊥|²/2."""
    s, w = special.roots_genlaguerre(n, (d - 1) / 2 - 1)
    return jnp.asarray(2 * s / d), jnp.asarray(w / special.gamma((d - 1) / 2))


def hyperbola(a0, w0, gamma):
    """(a(γ), w∥(γ)): the mean-field node trajectory, a² − w∥² conserved."""
    c, s = jnp.cosh(gamma), jnp.sinh(gamma)
    return a0 * c + w0 * s, w0 * c + a0 * s


def F(x, q, gamma, d, nodes):
    """F(x∥, q, γ) = E_{a₀,w₀}[a(γ) g(w∥(γ) x∥/√d; q)], broadcast over x and q."""
    a0, w0, weight = nodes
    a, w = hyperbola(a0, w0, gamma)
    m = w * (jnp.asarray(x)[..., None] / jnp.sqrt(d))
    sq = jnp.sqrt(jnp.asarray(q))[..., None]
    g = m * norm.cdf(m / sq) + sq * norm.pdf(m / sq)
    return jnp.sum(weight * a * g, axis=-1)


def dF_dx(x, q, gamma, d, nodes):
    """∂F/∂x∥ = E_{a₀,w₀}[a(γ) w∥(γ) Φ(w∥(γ) x∥/√(dq))]/√d."""
    a0, w0, weight = nodes
    a, w = hyperbola(a0, w0, gamma)
    m = w * (jnp.asarray(x)[..., None] / jnp.sqrt(d))
    return jnp.sum(weight * a * w * norm.cdf(m / jnp.sqrt(jnp.asarray(q))[..., None]), axis=-1) / jnp.sqrt(d)


def x_star(q, gamma, d, alpha, h, nodes, bisections=32, newton=3):
    """x*(q, γ), the root of αF(x*, q, γ) = h on [0, X_MAX] (X_MAX if there is none): bisection
    to ~1e−8, then Newton steps, kept inside the bracket, to round-off."""
    lo = jnp.zeros_like(q)
    hi = jnp.full_like(q, X_MAX)

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        below = alpha * F(mid, q, gamma, d, nodes) < h
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, bisections, bisect, (lo, hi))

    def polish(_, x):
        step = (alpha * F(x, q, gamma, d, nodes) - h) / (alpha * dF_dx(x, q, gamma, d, nodes))
        return jnp.clip(x - step, lo, hi)

    return jax.lax.fori_loop(0, newton, polish, 0.5 * (lo + hi))


def gamma_rate(gamma, d, alpha, h, nodes, qs):
    """dγ/dt = E_q[φ(0) − φ(x*)]/(α√d)."""
    q, wq = qs
    xs = x_star(q, gamma, d, alpha, h, nodes)
    return jnp.sum(wq * (PHI0 - norm.pdf(xs))) / (alpha * jnp.sqrt(d))


def unsatisfied_fraction(gamma, d, alpha, h, nodes, qs):
    """Share of examples with y f < h: E_q[2Φ(x*) − 1]."""
    q, wq = qs
    xs = x_star(q, gamma, d, alpha, h, nodes)
    return jnp.sum(wq * (2 * norm.cdf(xs) - 1))


def closure(ts, d, alpha=1.0, h=1.0, rtol=1e-8, num_nodes=20, num_q=12):
    """Integrate the closure from γ(0) = 0 with diffrax (Tsit5, PID control); returns a dict of
    arrays over `ts`: "gamma", "fraction" (unsatisfied), "rate" (dγ/dt), "rd" (‖W−W₀‖/‖W₀‖)
    and "cos" (mean |cos(w_i, ŵ*)|)."""
    _check(d, alpha, h)
    ts = jnp.asarray(ts, dtype=float)
    if ts.ndim != 1 or ts[0] < 0 or jnp.any(jnp.diff(ts) < 0):
        raise ValueError("ts must be a non-decreasing 1-D array of times ≥ 0")
    nodes, qs = node_quadrature(num_nodes), q_quadrature(d, num_q)
    consts = (jnp.asarray(float(d)), jnp.asarray(float(alpha)), jnp.asarray(float(h)), nodes, qs)
    # Pad ts to a multiple of TS_BUCKET (repeating the last time) so that every call of one
    # quadrature size reuses one compiled solve.
    n = len(ts)
    padded = jnp.concatenate([ts, jnp.full(-n % TS_BUCKET, ts[-1])])
    out = _closure(padded, jnp.asarray(float(rtol)), consts)
    return {k: v[:n] for k, v in out.items()}


TS_BUCKET = 256


@jax.jit
def _closure(ts, rtol, consts):
    gamma = _solve(ts, rtol, consts)
    d, alpha, h, nodes, qs = consts
    rate, fraction = jax.vmap(lambda g: (gamma_rate(g, d, alpha, h, nodes, qs), unsatisfied_fraction(g, d, alpha, h, nodes, qs)))(gamma)
    return {
        "t": ts,
        "gamma": gamma,
        "fraction": fraction,
        "rate": rate,
        "rd": relative_displacement(gamma, d),
        "cos": mean_abs_cos(gamma, d, nodes, qs),
    }


def _solve(ts, rtol, consts):
    d, alpha, h, nodes, qs = consts

    def field(t, gamma, args):
        return gamma_rate(gamma, d, alpha, h, nodes, qs)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Tsit5(),
        0.0,
        ts[-1],
        None,
        jnp.asarray(0.0),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-3),
        max_steps=100_000,
    )
    return sol.ys


def relative_displacement(gamma, d):
    """RD = ‖W − W₀‖/‖W₀‖ = √(((cosh γ − 1)² + sinh² γ)/d) (only w∥ moves)."""
    return jnp.sqrt(((jnp.cosh(gamma) - 1) ** 2 + jnp.sinh(gamma) ** 2) / d)


def mean_abs_cos(gamma, d, nodes=None, qs=None):
    """E|cos(w_i, ŵ*)| = E|w∥(γ)|/√(w∥(γ)² + |w⊥|²), |w⊥|² ~ χ²_{d−1} frozen (quadrature in both)."""
    a0, w0, weight = node_quadrature() if nodes is None else nodes
    q, wq = q_quadrature(d) if qs is None else qs
    _, w = hyperbola(a0, w0, jnp.asarray(gamma)[..., None, None])
    cos = jnp.abs(w) / jnp.sqrt(w**2 + d * q[:, None])
    return jnp.sum(wq[:, None] * weight * cos, axis=(-2, -1))


def on_nodes(gamma, a0, W0):
    """(RD, mean |cos(w_i, ŵ*)|) of M sampled nodes, a₀ (M,) and W₀ (M, d) with ŵ* = e₁, moved
    along the mean-field hyperbola to γ with w⊥ frozen: the closure's prediction for a finite
    network's own initial draw (`relative_displacement` and `mean_abs_cos` are its M → ∞ means)."""
    W0 = np.asarray(W0)
    _, w = hyperbola(np.asarray(a0), W0[:, 0], gamma)
    W = np.column_stack([w, W0[:, 1:]])
    rd = np.linalg.norm(W - W0) / np.linalg.norm(W0)
    return float(rd), float(np.mean(np.abs(w) / np.linalg.norm(W, axis=1)))


@jax.jit
def finite_m_spread(x_par, z_perp, gamma, a0, w_par0, d):
    """s/α, the finite-M standard deviation of f(x)/α = (1/M) Σ_i a_i(γ) ReLU((w∥i(γ) x∥ +
    w⊥i·x⊥)/√d) over the draw of M nodes (science_B §E, finite size [R]), from the M nodes'
    initial a₀ (M,), w∥₀ (M,) and z_perp = w⊥i·x⊥ (M, …) on the hyperbola at γ; x_par and
    gamma broadcast against z_perp's trailing axes."""
    a, w = hyperbola(jnp.asarray(a0)[:, None], jnp.asarray(w_par0)[:, None], jnp.asarray(gamma))
    values = a * jax.nn.relu((w * jnp.asarray(x_par) + jnp.asarray(z_perp)) / jnp.sqrt(d))
    return jnp.std(values, axis=0) / jnp.sqrt(values.shape[0])


def satisfaction_band(q, gamma, spread, d, alpha=1.0, h=1.0, nodes=None):
    """(x*, s_x): where an example with perpendicular norm q is predicted to become satisfied when the closure is at
    γ, x*(q, γ), and the ±1 sd finite-M band around it, s_x = (s/α)/∂F/∂x∥(x*, q, γ), from
    αF(x*) + s·ε = h at first order (Pellegrini & Biroli, Fig. 1: |x·ŵ*| against the first
    satisfaction time). Arrays of examples; `spread` = s/α of `finite_m_spread`."""
    nodes = node_quadrature() if nodes is None else nodes
    consts = (jnp.asarray(float(d)), jnp.asarray(float(alpha)), jnp.asarray(float(h)), nodes)
    q, gamma, spread = (jnp.atleast_1d(jnp.asarray(v, float)) for v in (q, gamma, spread))
    n = len(q)
    # Padded (with the last example) to a multiple of TS_BUCKET: one compiled band for all n.
    pad = lambda v: jnp.concatenate([v, jnp.full(-n % TS_BUCKET, v[-1])])
    xs, sx = _band(pad(q), pad(gamma), pad(spread), consts)
    return xs[:n], sx[:n]


@jax.jit
def _band(q, gamma, spread, consts):
    d, alpha, h, nodes = consts
    xs = jax.vmap(lambda qi, gi: x_star(qi, gi, d, alpha, h, nodes))(q, gamma)
    slope = jax.vmap(lambda xi, qi, gi: dF_dx(xi, qi, gi, d, nodes))(xs, q, gamma)
    return xs, spread / slope


def initial_rate(d, alpha=1.0):
    """dγ/dt at t = 0, where every example is unsatisfied: 1/(α√(2πd))."""
    return 1.0 / (alpha * np.sqrt(2 * np.pi * d))


def late_gamma(t, d, alpha=1.0, h=1.0):
    """γ ≈ ¼ ln t + ¼ ln(32√d h²/(√(2π) α³)) at late times (rich regime)."""
    return 0.25 * np.log(t) + 0.25 * np.log(32 * np.sqrt(d) * h**2 / (np.sqrt(2 * np.pi) * alpha**3))


def late_fraction(t, d, alpha=1.0):
    """Unsatisfied fraction ≈ √2 (d/2π)^{1/4} (t/α)^{−1/2} at late times, independent of h."""
    return np.sqrt(2) * (d / (2 * np.pi)) ** 0.25 * (np.asarray(t) / alpha) ** -0.5


def laziness(d, alpha=1.0, h=1.0):
    """κ = α/(h√d): rich for κ ≲ 1 (γ ≫ 1, nodes align with ŵ*), lazy for κ ≫ 10."""
    return alpha / (h * np.sqrt(d))


def departure_fraction(N, d):
    """Heuristic unsatisfied fraction where a finite training set (N examples) departs from the
    closure: 2φ(0)·(d/(φ(0) N))^{1/3}."""
    return 2 * PHI0 * (d / (PHI0 * N)) ** (1 / 3)
