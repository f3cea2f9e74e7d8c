"""Filippov sliding against closed forms (issue 19): a hinge margin and a curved surface, with
the kinks found from the program (`gflow.kinks.find`), the switching solve beside the plain one.

- "hinge": L(w) = max(0, 1 − y x·w) + λ/2 ‖w‖², one point with |x|² > λ. Below the margin
  w' = y x − λ w, so w(t) = w* + (w0 − w*) e^{−λt} (w* = y x/λ) and the margin m = y x·w reaches
  1 at t_s = ln((m* − m0)/(m* − 1))/λ (m* = |x|²/λ). Both sides push onto it (normal velocity
  |x|² − λ > 0 below, −λ < 0 above): it slides, w∥ stays at y x/|x|² and w⊥ decays as
  e^{−λ(t − t_s)}.
- "circle": L(θ) = |‖θ‖² − 1| − c θ₂ in the plane. Inside θ' = 2θ + c e₂, so
  θ(t) = (θ0 + c e₂/2) e^{2t} − c e₂/2 until ‖θ‖ = 1 (t_s by bisection on that closed form);
  both sides push onto the circle (normal velocities ∓4 + 2cθ₂, |c| < 2), and the Filippov flow
  on it is the tangential part of c e₂: φ' = c cos φ, tan(φ/2 + π/4) = tan(φ_s/2 + π/4) e^{c(t − t_s)}.
  The surface is not affine in θ (`Switching.linear` False).

    python benchmarks/sliding_closed_form.py

prints, per case and rtol, steps and the relative weight error max|θ − θ_exact| / max|θ_exact|
of the switching and the plain solve (plain capped at 200,000 steps).
"""

import jax.numpy as jnp
import numpy as np

import gflow


def hinge(lam=0.5, y=-1.0, x=(1.0, 0.5, -0.25), w0=(0.3, -0.2, 0.6), slide_for=3.0):
    """(L, θ0, t1, θ_exact(t1), t_s) of the hinge-margin case."""
    x, w0 = np.asarray(x), np.asarray(w0)
    xx, m0 = x @ x, y * x @ w0
    m_star = xx / lam
    t_s = np.log((m_star - m0) / (m_star - 1)) / lam
    w_s = y * x / lam + (w0 - y * x / lam) * np.exp(-lam * t_s)
    perp = w_s - (w_s @ x) / xx * x
    exact = y * x / xx + perp * np.exp(-lam * slide_for)
    xj = jnp.asarray(x)
    L = lambda w: jnp.maximum(0.0, 1 - y * xj @ w) + 0.5 * lam * w @ w  # noqa: E731
    return L, jnp.asarray(w0), t_s + slide_for, exact, t_s


def circle(c=0.5, th0=(0.5, 0.0), slide_for=1.5):
    """(L, θ0, t1, θ_exact(t1), t_s) of the curved-surface case."""
    th0 = np.asarray(th0)
    inside = lambda t: (th0 + np.array([0.0, c / 2])) * np.exp(2 * t) - np.array([0.0, c / 2])  # noqa: E731
    lo, hi = 0.0, 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if inside(mid) @ inside(mid) < 1 else (lo, mid)
    t_s = 0.5 * (lo + hi)
    phi_s = np.arctan2(*inside(t_s)[::-1])
    phi = 2 * np.arctan(np.tan(phi_s / 2 + np.pi / 4) * np.exp(c * slide_for)) - np.pi / 2
    L = lambda th: jnp.abs(th @ th - 1.0) - c * th[1]  # noqa: E731
    return L, jnp.asarray(th0), t_s + slide_for, np.array([np.cos(phi), np.sin(phi)]), t_s


CASES = {"hinge": hinge, "circle": circle}


def error(traj, exact):
    return float(np.max(np.abs(np.asarray(traj.final_params) - exact)) / np.max(np.abs(exact)))


def main():
    print("| case | rtol | switching: steps, error | plain: status, steps, error |\n|---|---|---|---|")
    for name, case in CASES.items():
        L, p0, t1, exact, _ = case()
        for rtol in (1e-8, 1e-10):
            sw = gflow.simulate(L, p0, t1, rtol=rtol)
            pl = gflow.simulate(L, p0, t1, rtol=rtol, switching=False, max_steps=200_000)
            print(f"| {name} | {rtol:g} | {int(sw.num_steps)}, {error(sw, exact):.1e} | "
                  f"{pl.status}, {int(pl.num_steps):,}, {error(pl, exact):.2g} |", flush=True)


if __name__ == "__main__":
    main()
