"""Crossings: where a Runge–Kutta step of the frozen piece crossed switching surfaces, the kink
correction that steps over them, and its error estimate.

Each step uses the frozen pattern of its start. At its end the sign of every s_k is checked
against the pattern; for every mismatch the crossing time τ_k is located on the step's dense
output (s along it is fitted through degree + 1 Chebyshev nodes, the degree of the solver's dense
output: exact for affine s). With ΔF_k = Δp_k ∂F/∂p_k the jump of the field at s_k = 0 and
u_k = t_b − τ_k, the frozen step is corrected by

    δ = Σ_k [∫_{τ_k}^{t_b} ΔF_k dt + ½ u_k² J ΔF_k] + O(h³),

ΔF_k linear in t between the step's ends. The jump of one crossing moves later crossings of the
surfaces it acts on: s_k(τ) + Σ_m (τ − τ_m)⁺ ∇s_k·ΔF_m = 0 is solved for the B earliest by two
fixed-point sweeps. The error estimate |δ − Σ_k u_k ΔF_k(t_a)| + Σ_k |ΔF_k|·(change of τ_k in the
second sweep) ∝ u² is controlled beside the Runge–Kutta estimate (`_KINK_ORDER`). The B slots
cost whether occupied or not, so a step with fewer crossings uses a smaller tier (`slot_tiers`).
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

# the kink correction's error estimate scales like u² (u: time from a crossing to the step's end)
_KINK_ORDER = 2

# the smallest slot tier of a large crossing buffer (`slot_tiers`)
_FEW_CROSSINGS = 32

# the degree of each solver's dense output in t (diffrax: Tsit5's and Dopri5's are quartic,
# Dopri8's of degree 6, Bosh3's cubic Hermite, Heun's Hermite cubic with a vanishing cubic term
# since y₁ = y₀ + h(k₀ + k₁)/2; checked in tests/test_switching.py); 7 for any other solver
_DENSE_DEGREE = {diffrax.Tsit5: 4, diffrax.Dopri5: 4, diffrax.Dopri8: 6, diffrax.Bosh3: 3, diffrax.Heun: 2}


def _chebyshev_fit(degree):
    """The degree + 1 Chebyshev–Lobatto points of [−1, 1] and the map from values there to
    monomial coefficients: the polynomial through them reproduces any dense output of that degree."""
    nodes = -np.cos(np.pi * np.arange(degree + 1) / degree)
    return nodes, np.linalg.inv(np.vander(nodes, increasing=True))


def _root(fn, a, b, tol, max_iter=200):
    """The first point b' of [a, b] with fn(b') ≤ 0 up to |b' − a'| ≤ tol, where fn(b) < 0:
    the Illinois variant of regula falsi (superlinear on smooth fn, bisection-safe otherwise).
    Returns a itself when fn(a) ≤ 0 already. Also returns the number of evaluations."""
    fa, fb = fn(a), fn(b)

    def cond(c):
        a, fa, b, fb, side, it = c
        return (b - a > tol) & (it < max_iter) & (fa > 0)

    def body(c):
        a, fa, b, fb, side, it = c
        m = jnp.clip((a * fb - b * fa) / (fb - fa), a + 0.05 * (b - a), b - 0.05 * (b - a)).astype(a.dtype)
        fm = fn(m)
        left = fm > 0
        # Illinois: halve the value kept twice in a row so that the bracket shrinks on both sides
        fb = jnp.where(left & (side == 1), 0.5 * fb, fb)
        fa = jnp.where(~left & (side == -1), 0.5 * fa, fa)
        a, fa = jnp.where(left, m, a), jnp.where(left, fm, fa)
        b, fb = jnp.where(left, b, m), jnp.where(left, fb, fm)
        return a, fa, b, fb, jnp.where(left, 1, -1), it + 1

    a, fa, b, fb, _, it = jax.lax.while_loop(cond, body, (a, fa, b, fb, jnp.asarray(0), jnp.asarray(0)))
    return jnp.where(fa > 0, b, a), it + 2


def _earliest(values, count, few):
    """The `count` smallest entries of `values` in ascending order and their indices, an index
    len(values) marking a slot left empty (value inf). On a CPU `lax.top_k` sorts all K entries;
    when at most `few` (static) entries are finite they are gathered first and only they sorted."""
    K = values.shape[0]
    finite = jnp.isfinite(values)

    def gathered():
        # the first `few` finite entries (K: none): jnp.nonzero's cumsum and K-wide scatter cost
        # ~3× an associative scan and a binary search per slot on a CPU
        seen = jax.lax.associative_scan(jnp.add, finite.astype(jnp.int32))
        slots = jnp.arange(1, few + 1, dtype=jnp.int32)
        index = jnp.searchsorted(seen, slots, side="left", method="scan_unrolled")
        neg, pick = jax.lax.top_k(-values.at[index].get(mode="fill", fill_value=jnp.inf), count)
        return -neg, index[pick].astype(jnp.int32)

    def all_sorted():
        neg, index = jax.lax.top_k(-values, count)
        return -neg, index

    value, index = jax.lax.cond(jnp.sum(finite) <= few, gathered, all_sorted)
    return value, jnp.where(jnp.isfinite(value), index, K)


class Attempt(eqx.Module):
    """One Runge–Kutta step of the frozen piece from t_a, and what the decisions after it need."""

    ta: jax.Array
    ya: jax.Array  # the step's start (projected onto the sliding surfaces)
    s_a: jax.Array  # s(ya)
    y_err: jax.Array  # the Runge–Kutta error estimate
    interp: diffrax.AbstractLocalInterpolation  # the step's dense output
    piece: tuple  # (relaxed pattern, geometry): the frozen piece's field is ctx.piece_field
    pattern: jax.Array
    sliding: jax.Array
    nonsliding: jax.Array  # surfaces whose crossings are checked
    on_pending: jax.Array  # the surface a re-taken step ends on (not a crossing)
    pending_here: jax.Array  # the step ends on the event it was re-taken for
    solver_state: object  # after the step
    controller: diffrax.PIDController
    controller_state: object  # before the step
    time_tol: jax.Array  # times closer than this are one


class _Kinks(eqx.Module):
    """The crossings of one step and its kink correction (`kinks`)."""

    tau: jax.Array  # crossing times with the jumps' coupling (inf: no crossing)
    tau_frozen: jax.Array  # crossing times on the frozen dense output
    delta: jax.Array  # the kink correction of the step's end state
    error: jax.Array  # its error estimate, ∝ u²
    moved: jax.Array  # crossings pushed out of the step by another's jump
    t_split: jax.Array  # where a step with more than B crossings is split (inf: none)


class Over(eqx.Module):
    """The step [t_a, t_b] with its kinks: crossings, their correction and its error test."""

    tb: jax.Array
    yb: jax.Array  # the frozen step's end
    s_b: jax.Array
    crossing: jax.Array  # bool (K,): surfaces crossed in the step
    any_crossing: jax.Array
    found: _Kinks
    yc: jax.Array  # the corrected end yb + δ
    keep_kinks: jax.Array  # whether the kinks' error passes
    dt_kinks: jax.Array  # the step size the kinks' error proposes


def _crossing_nodes(ctx, att, tb, s_b, crossing, B):
    """The crossings' places on the step as x ∈ [−1, 1] (t = t_a + (x + 1) h / 2): s along the
    dense output fitted through the Chebyshev nodes (`coeffs`, monomial, one column per surface),
    all crossings ranked by linear interpolation between the nodes, and the B + 1 earliest
    (`candidates`, K for an empty slot) located exactly on the fit."""
    K = ctx.K
    ta, h = att.ta, tb - att.ta
    node_points, node_fit = _chebyshev_fit(_DENSE_DEGREE.get(type(ctx.solver), 7))
    few = min(K, 8 * (B + 1))  # crossings ranked without sorting all K surfaces (`_earliest`)
    # s(y(t)) on the step's dense output as a polynomial in x ∈ [−1, 1] (exact for affine s)
    nodes = jnp.asarray(node_points, ctx.dtype)
    inner = jax.vmap(lambda x: ctx.surfaces(att.interp.evaluate(ta + 0.5 * (x + 1) * h)))(nodes[1:-1])
    values = jnp.concatenate([att.s_a[None], inner, s_b[None]])
    coeffs = jnp.asarray(node_fit, ctx.dtype) @ values
    sign = jnp.where(att.pattern, 1.0, -1.0).astype(ctx.dtype)
    # the crossing is the last one to the new side: bracket it after the last node still on
    # the old side (a surface left at s ≈ 0 by the previous step may start on either side)
    old_side = sign * values > 0
    last = len(node_points) - 1 - jnp.argmax(old_side[::-1], axis=0)

    start_old = jnp.any(old_side, axis=0)
    # the crossing in that bracket by linear interpolation between its nodes: it ranks the
    # crossings, and only the B + 1 earliest are located exactly (a vmapped root finder costs
    # its iterations on every lane, ~45 gradients on digits for all K = 7,200 surfaces); a
    # step with more than B crossings is split before it is kept, so none is left out
    right = jnp.minimum(last + 1, len(node_points) - 1)
    v_lo = jnp.take_along_axis(values, last[None], axis=0)[0]
    v_hi = jnp.take_along_axis(values, right[None], axis=0)[0]
    weight = jnp.clip(v_lo / jnp.where(v_lo == v_hi, 1.0, v_lo - v_hi), 0.0, 1.0)
    x_lin = jnp.where(start_old, nodes[last] + weight * (nodes[right] - nodes[last]), -1.0)
    x_first, candidates = _earliest(jnp.where(crossing, x_lin, jnp.inf), min(B + 1, K), few)
    inside = jnp.minimum(candidates, K - 1)  # for gathers; candidates == K marks an empty slot

    def lane(c, sg, j, active):
        value = lambda x: jnp.where(active, sg * jnp.polyval(c[::-1], x), -1.0)
        right = nodes[jnp.minimum(j + 1, len(node_points) - 1)]
        return _root(value, nodes[j], right, 2 * att.time_tol / h)[0]

    exact = jnp.isfinite(x_first) & start_old[inside]
    x_exact = jax.vmap(lane)(coeffs.T[inside], sign[inside], last[inside], exact)
    x_root = x_lin.at[candidates].set(jnp.where(exact, x_exact, x_lin[inside]), mode="drop")
    return x_root, candidates, coeffs


def kinks(ctx, att, tb, yb, s_b, crossing, B) -> _Kinks:
    """Crossing times τ_k of the surfaces in `crossing` and the kink correction of the
    frozen-pattern step [t_a, t_b], with the error estimate of its first-order part, in B
    (static) slots: the B earliest crossings, the step split before the next one."""
    K, ta, ya = ctx.K, att.ta, att.ya
    h = tb - ta
    p, geo = att.piece
    x_root, candidates, coeffs = _crossing_nodes(ctx, att, tb, s_b, crossing, B)
    inside = jnp.minimum(candidates, K - 1)
    dp = jnp.where(crossing, -jnp.where(att.pattern, 1.0, -1.0).astype(ctx.dtype), 0.0)
    # the piece's field is Π F(y, p) with Π linear and fixed within the step: linearise F
    # alone (a linearised projection would carry its M × D normals as residuals)
    _, frozen_in_p = jax.linearize(lambda q: ctx.frozen_field(ya, q), p)
    at_a = lambda q: geo.project(frozen_in_p(q))

    # the jump of one crossing moves the later crossings of surfaces it pushes on (same
    # neuron): s_k(τ) + Σ_m (τ − τ_m)⁺ n_k·ΔF_m = 0, solved for the B earliest crossings by
    # two fixed-point sweeps; the second sweep's change is the error estimate of the times
    tau0 = jnp.where(crossing, ta + 0.5 * (x_root + 1) * h, jnp.inf)
    # ranked among the B + 1 located ones: a step holding more crossings is split anyway
    tau_located = jnp.where(candidates < K, tau0[inside], jnp.inf)
    rank = jnp.argsort(tau_located)
    earliest = tau_located[rank]
    valid, order = jnp.isfinite(earliest[:B]), candidates[rank][:B]  # K where a slot is empty
    at = jnp.minimum(order, K - 1)  # for gathers; masked by `valid`
    jumps = ctx.jump_fields(ya, p, geo, at, at_a) * (dp[at] * valid)[:, None]
    coupling = ctx.couplings(ya, at, jumps)
    coupling = coupling * (1 - jnp.eye(B, dtype=ctx.dtype))  # n_k·ΔF_m for m ≠ k
    slope = jax.vmap(lambda c, x: jnp.polyval(jnp.polyder(c[::-1]), x))(coeffs.T[at], x_root[at]) * 2 / h
    slope = jnp.where(valid, slope, 1.0)

    start = jnp.where(valid, earliest[:B], ta)

    def sweep(t):
        lag = jnp.maximum(t[:, None] - t[None, :], 0.0) * valid[None, :]
        return start - jnp.sum(lag * coupling, axis=1) / slope

    first_sweep = sweep(start)
    second_sweep = sweep(first_sweep)
    # bounded by jump, not summed with signs: a signed Σ_m ΔF_m·(change of τ_m), which needs
    # no B × D block of jumps, let digits' rtol-1e-8 error grow 3× (1.1e-7 against 3.2e-8)
    tau_err = jnp.where(valid, jnp.abs(second_sweep - first_sweep), 0.0)
    tau = tau0.at[order].set(jnp.where(valid, second_sweep, jnp.inf), mode="drop")
    # a crossing pushed out of the step by another's jump needs a decision: cut there
    moved = crossing & ((tau < ta) | (tau > tb))
    tau = jnp.where(crossing, jnp.clip(tau, ta, tb), jnp.inf)
    theta = jnp.where(crossing, (tau - ta) / h, 0.0)
    u = jnp.where(crossing, (1 - theta) * h, 0.0)
    # more than B crossings: the step is split between the B-th and the next one
    t_split = jnp.asarray(jnp.inf, ctx.dtype)
    if K > B:
        t_split = jnp.where(jnp.sum(crossing) > B, 0.5 * (earliest[B - 1] + earliest[B]), jnp.inf)
    # δ' = J δ + Σ_k H(t − τ_k) ΔF_k with ΔF_k = Δp_k ∂F/∂p_k, linear in t between ya and yb:
    # δ(tb) = Σ_k [∫_{τ_k}^{tb} ΔF_k dt + ½ u_k² J ΔF_k] + O(h³)
    c_a = dp * h * (1 - theta) ** 2 / 2
    c_b = dp * h * (1 - theta**2) / 2
    q_a, v, first = jax.vmap(at_a)(jnp.stack([c_a, dp * u**2 / 2, dp * u]))
    q_b = geo.project(jax.jvp(ctx.frozen_field, (yb, p), (v, c_b))[1])
    delta = q_a + q_b
    error = jnp.abs(delta - first) + tau_err @ jnp.abs(jumps)
    return _Kinks(tau, tau0, delta, error, moved, t_split)


def slot_tiers(B):
    """The slot counts `kinks` is compiled for under a crossing buffer of B slots: a step with
    fewer crossings uses the smallest tier holding them. A slot costs a jump ∂F/∂p_k (a D-vector)
    and a row of the coupling whether occupied or not; on issue 7's d = 256 problem (D = 25,700)
    the kinks of a step cost ~1.3 ms with 32 slots, ~3 ms with 64 and ~11 ms with 125 (two
    25 MB blocks, out of cache), against 0.5 ms for a gradient. Tiers double from 32 while
    1.5 × the tier fits in B; each is one more branch to compile, so B ≤ 47 has none."""
    tiers, b = [], _FEW_CROSSINGS
    while 3 * b <= 2 * B:
        tiers.append(b)
        b *= 2
    return (*tiers, B)


def no_kinks(ctx) -> _Kinks:
    zeros = jnp.zeros(ctx.size, ctx.dtype)
    never = jnp.full(ctx.K, jnp.inf, ctx.dtype)
    return _Kinks(never, never, zeros, zeros, jnp.zeros(ctx.K, bool), jnp.asarray(jnp.inf, ctx.dtype))


def signed(pattern, s):
    """s_k signed so that it is positive on the side of the pattern."""
    return jnp.where(pattern, s, -s)


def over(ctx, att, tb, yb, tiered=True) -> Over:
    """The step [t_a, t_b] with its kinks: crossings, their correction and its error test.
    `tiered` (static): the kinks in the smallest of `slot_tiers(B)` holding the crossings (the
    same numbers); False, in B slots always, for the rarer re-evaluation of a shortened step,
    which then compiles the kinks once more rather than once per tier."""
    s_b = ctx.surfaces(yb)
    # a surface whose s did not move in the step was not crossed in it: a state left at s ≈ 0
    # on the far side by round-off where the pattern's field has no normal component (a ReLU
    # neuron that died on its kink) would otherwise be crossed back at every step (stalled
    # 10 of 30 flows of L = Σ relu(θ_k) c_k into their kinks)
    crossing = att.nonsliding & ~att.on_pending & (signed(att.pattern, s_b) < 0) & (s_b != att.s_a)
    any_crossing = jnp.any(crossing)
    tiers = slot_tiers(ctx.B) if tiered else (ctx.B,)
    # 0: no crossing; else the smallest tier holding them (the largest: the step is split)
    tier = jnp.where(any_crossing, 1 + jnp.minimum(jnp.searchsorted(jnp.asarray(tiers), jnp.sum(crossing)),
                                                  len(tiers) - 1), 0)
    found = jax.lax.switch(tier, [lambda: no_kinks(ctx)] + [
        functools.partial(kinks, ctx, att, tb, yb, s_b, crossing, b) for b in tiers])
    yc = yb + found.delta
    keep_kinks, kinks_a, kinks_b, _, _, _ = att.controller.adapt_step_size(
        att.ta, tb, att.ya, yc, att.piece, found.error, _KINK_ORDER, att.controller_state
    )
    return Over(tb, yb, s_b, crossing, any_crossing, found, yc, keep_kinks, kinks_b - kinks_a)


def onto_side(ctx, y, pattern, k):
    """y with surface k (K: none) strictly on the side `pattern` gives it. A state located at a
    crossing lies at s_k ≈ 0 up to round-off, possibly on the far side; where the field of the
    decided side has no normal component (a ReLU neuron that dies on its kink) it stays there,
    and the state, its observables (a neuron counted active at s = +3e-24) and the pattern
    disagree for good. The state is moved along ∇s_k to s_k = ±m, m = 16 eps |∇s_k| |y|, above
    the round-off of s_k(y) (a reflection −s_k would be below the resolution of y itself). The
    move is the distance to the surface: round-off on affine surfaces (≤ 6e-17 measured on
    two-layer nets), up to the root finder's time tolerance on curved ones (2e-9 on a 3-layer
    net at rtol 1e-6)."""

    def move():
        s_k = ctx.surfaces(y)[k]
        n = ctx.surface_normals(y, k[None])[0]
        nn = n @ n
        margin = 16 * jnp.finfo(y.dtype).eps * jnp.sqrt(nn) * jnp.linalg.norm(y)
        target = jnp.where(pattern[k], margin, -margin)
        short = (signed(pattern[k], s_k) < margin) & (nn > 0)
        return jnp.where(short, y + (target - s_k) * n / jnp.where(nn > 0, nn, 1.0), y)

    return jax.lax.cond(k < ctx.K, move, lambda: y)


def new_side(ctx, att, ov):
    """The field of the new pattern at the stepped-over end, and the crossings that need a
    decision: the end must lie on the new side of each crossed surface with the new side's field
    pointing away from it (a, b of one sign); else sliding may begin."""
    flipped = att.pattern ^ ov.crossing
    f_new = ctx.piece_field(ov.tb, ov.yc, (ctx.relaxed(flipped, att.sliding, 0.5), att.piece[1]))
    s_c, velocity = jax.jvp(ctx.surfaces, (ov.yc,), (f_new,))
    away = (signed(flipped, s_c) > 0) & (signed(flipped, velocity) > 0)
    return f_new, ov.crossing & (ov.found.moved | ~away)
