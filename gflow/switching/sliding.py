"""Sliding: the Filippov geometry of the surfaces the flow slides on, and the decisions that
change the sliding set.

On the sliding set S the Filippov field of a gradient flow of a continuous L is the orthogonal
projection of any one-sided field onto the tangent space of the surfaces,

    F_S = Π F,   Π u = u − Nᵀ (N Nᵀ)⁺ N u,   N = [∇s_k]_{k∈S}   (`_Geometry`),

with convex weights α = −λ/β, λ = (NNᵀ)⁺N F(p_S=0), β = (NNᵀ)⁺N(F(p_S=1) − F(p_S=0)) (`alphas`);
sliding on k ends where α_k reaches 0 or 1. An onset or an exit decides the whole set at once
(`filippov_set`): the Filippov field is the minimal-norm value of F(p_S = q) over q ∈ [0, 1]^S,
a box-constrained least-squares problem (`_box_least_squares`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp

_FEW_SLIDING = (16, 64)  # smaller sliding sets use a leading block of the geometry (`_tiers`)
_BOX_SWEEPS = 16  # coordinate-descent sweeps after the active-set method (`_box_least_squares`)

_CROSS, _EXIT, _USER = 1, 2, 3  # the kinds of event a step may end on


class _Geometry(eqx.Module):
    """Normals N (M, D) of the sliding surfaces (zero rows for empty slots) and (NNᵀ)⁺.

    The sliding slots are kept compact (occupied ones first): while at most m of the tier sizes
    `_tiers(M)` slide, N's other rows are zero and (NNᵀ)⁺ is block diagonal, so Π and the
    coordinates use the leading m-row block only (4 m D flops per vector instead of 4 M D)."""

    normals: jax.Array
    gram_pinv: jax.Array
    sliding: jax.Array  # whether any surface slides (else N = 0 and Π is the identity)
    tier: jax.Array  # index into _tiers(M) of the smallest block holding every sliding surface
    indices: jax.Array  # the sliding surfaces (slots, −1 empty)

    def project(self, u):
        block = lambda m: lambda: u - self.normals[:m].T @ (self.gram_pinv[:m, :m] @ (self.normals[:m] @ u))
        branches = [lambda: u] + [block(m) for m in _tiers(self.normals.shape[0])]
        return jax.lax.switch(jnp.where(self.sliding, self.tier + 1, 0), branches)

    def coordinates(self, u):
        M = self.normals.shape[0]
        block = lambda m: lambda: jnp.zeros(M, u.dtype).at[:m].set(self.gram_pinv[:m, :m] @ (self.normals[:m] @ u))
        return jax.lax.switch(self.tier, [block(m) for m in _tiers(M)])


def _tiers(M):
    """The block sizes of the sliding geometry for a buffer of M slots (`_Geometry`): a smaller
    block only where it is at most a quarter of M. Every tier is a branch of each `lax.switch`
    of the step (compiled whether taken or not): without the middle tier the switching solve of
    a two-layer net with M = 100 compiles in 8% less time, while a block over M/4 would save
    under 4× of a projection that costs about one gradient on such small nets."""
    return tuple(m for m in _FEW_SLIDING if 4 * m <= M) + (M,)


def _box_least_squares(H, b, valid):
    """argmin ½ qᵀHq + bᵀq over q ∈ [0, 1]^m, H = GGᵀ ⪰ 0, for the `valid` entries (the others
    are 0): the primal-dual active-set method (Hintermüller, Ito & Kunisch 2002). Each iteration
    predicts the bounds from one projected-gradient step, q − (Hq + b)/diag(H), fixes those
    entries and solves the free block exactly; it ends when the prediction repeats (finite
    termination for well-conditioned H). A tiny ridge keeps nearly parallel normals solvable."""
    m = H.shape[0]
    diag = jnp.diag(H)
    ridge = 1e-13 * jnp.maximum(jnp.max(diag), jnp.finfo(H.dtype).tiny)
    scale = jnp.where(diag > 0, diag, 1.0)

    def solve(low, high):
        free = valid & ~low & ~high
        fixed = jnp.where(high & valid, 1.0, 0.0).astype(H.dtype)
        block = jnp.where(free[:, None] & free[None, :], H, 0.0) + jnp.diag(jnp.where(free, ridge, 1.0))
        rhs = jnp.where(free, -(b + H @ fixed), fixed)
        return jnp.linalg.solve(block, rhs)

    def sets(q):
        z = q - (H @ q + b) / scale
        return valid & (z < 0), valid & (z > 1)

    def cond(c):
        _, low, high, last_low, last_high, it = c
        return (it < 2 * m + 2) & ((it == 0) | jnp.any(low != last_low) | jnp.any(high != last_high))

    def body(c):
        q, low, high, _, _, it = c
        q = solve(low, high)
        new_low, new_high = sets(q)
        return q, new_low, new_high, low, high, it + 1

    q0 = jnp.where(valid, 0.5, 0.0).astype(H.dtype)
    low0, high0 = sets(q0)
    q, *_ = jax.lax.while_loop(cond, body, (q0, low0, high0, low0, high0, jnp.asarray(0)))
    q = jnp.where(valid, jnp.clip(q, 0.0, 1.0), 0.0)

    # the active-set method can cycle where H is ill-conditioned: cyclic coordinate descent
    # (monotone, convergent for H ⪰ 0) polishes its answer, exact where it had converged
    def coordinate(i, q):
        i = i % m
        qi = jnp.clip(q[i] - (H[i] @ q + b[i]) / scale[i], 0.0, 1.0)
        return q.at[i].set(jnp.where(valid[i] & (diag[i] > 0), qi, q[i]))

    return jax.lax.fori_loop(0, _BOX_SWEEPS * m, coordinate, q)


def empty_geometry(ctx) -> _Geometry:
    """The geometry of an empty sliding set (Π the identity)."""
    M, none = ctx.M, -jnp.ones(ctx.M, dtype=jnp.int32)
    return _Geometry(jnp.zeros((M, ctx.size), ctx.dtype), jnp.zeros((M, M), ctx.dtype), jnp.asarray(False),
                     jnp.asarray(0), none)


def geometry(ctx, y, sliding, last) -> _Geometry:
    """The geometry of the sliding surfaces `sliding` (slots, −1 empty) at y."""
    M = ctx.M
    count = jnp.sum(sliding >= 0)
    tier = jnp.searchsorted(jnp.asarray(_tiers(M)), count, side="left")

    def sliding_geometry():
        valid = sliding >= 0
        normals = ctx.surface_normals(y, jnp.where(valid, sliding, 0)) * valid[:, None]
        block = lambda m: lambda: jnp.zeros((M, M), ctx.dtype).at[:m, :m].set(
            jnp.linalg.pinv(normals[:m] @ normals[:m].T, hermitian=True))
        return normals, jax.lax.switch(tier, [block(m) for m in _tiers(M)])

    # M vjps and a pseudo-inverse cost ~10 gradients: skipped while nothing slides, when
    # `last` (a geometry of the same shape, unused then: Π is the identity) is passed on
    # rather than an M × D block of zeros written each step
    any_sliding = jnp.any(sliding >= 0)
    normals, gram_pinv = jax.lax.cond(any_sliding, sliding_geometry, lambda: (last.normals, last.gram_pinv))
    return _Geometry(normals, gram_pinv, any_sliding, tier, sliding)


def local(ctx, y, geo) -> _Geometry:
    """The geometry where a field is evaluated: the step start's for affine surfaces, the local
    one for curved surfaces (`Switching.linear`)."""
    return geo if ctx.switching.linear else geometry(ctx, y, geo.indices, geo)


def onto_surfaces(ctx, y, sliding, geo):
    """y moved onto its sliding surfaces (one Newton projection; exact for affine s)."""
    s_slide = jnp.where(sliding >= 0, ctx.surfaces(y)[jnp.maximum(sliding, 0)], 0.0)
    return y - geo.normals.T @ (geo.gram_pinv @ s_slide)


def alphas(ctx, y, pattern, sliding, geo):
    """Filippov weights α_k of the sliding surfaces (0.5 for empty slots: never an exit)."""
    geo = local(ctx, y, geo)
    f0 = ctx.frozen_field(y, ctx.relaxed(pattern, sliding, 0.0))
    f1 = ctx.frozen_field(y, ctx.relaxed(pattern, sliding, 1.0))
    lam = geo.coordinates(f0)
    beta = geo.coordinates(f1 - f0)
    alpha = -lam / jnp.where(beta == 0, 1.0, beta)
    return jnp.where(sliding >= 0, alpha, 0.5)


def exit_margin(alpha):
    """How far a weight is from an exit (negative: past one)."""
    return jnp.minimum(alpha, 1.0 - alpha)


def filippov_set(ctx, y, base, cand):
    """The sliding set among the surfaces in `cand` (slots, −1 empty; all at s = 0 in y)
    and the sides of the others: F(q) = F(p_cand = q) is affine in q there (the jump across
    a surface is normal to it), and the Filippov field is its minimal-norm value over
    q ∈ [0, 1]^cand. A surface with 0 < q_k < 1 slides (∇s_k·F = 0 by the optimality
    conditions); one at q_k = 0 or 1 leaves to that side (its normal velocity points there)."""
    K, M = ctx.K, ctx.M
    p0 = ctx.relaxed(base, cand, 0.0)
    f0, field_in_p = jax.linearize(lambda q: ctx.frozen_field(y, q), p0)

    def weights(m):
        # the problem on the leading m slots (the candidates lie there: slots are compact
        # but for the one an exit just emptied)
        def solve():
            valid = cand[:m] >= 0
            ks = jnp.where(valid, cand[:m], 0)
            if ctx.switching.jump is None:
                jumps = jax.vmap(field_in_p)(jax.nn.one_hot(ks, K, dtype=ctx.dtype))
            else:
                jumps = jax.vmap(lambda k: ctx.jump(y, p0, k))(ks)
            jumps = jumps * valid[:, None]
            q = _box_least_squares(jumps @ jumps.T, jumps @ f0, valid)
            return jnp.zeros(M, ctx.dtype).at[:m].set(q)

        return solve

    last = jnp.max(jnp.where(cand >= 0, jnp.arange(M), -1)) + 1
    tier = jnp.searchsorted(jnp.asarray(_tiers(M)), last, side="left")
    q = jax.lax.switch(tier, [weights(m) for m in _tiers(M)])
    valid = cand >= 0
    free = valid & (q > 0) & (q < 1)
    sides = base.at[jnp.where(valid & ~free, cand, K)].set(q >= 0.5, mode="drop")
    return sides, jnp.where(free, cand, -1)


def _one_sided(ctx, y, base, sliding, geo, k):
    """Normal velocities a (p_k = 0) and b (p_k = 1) of surface k on the sliding set."""
    n_k = ctx.surface_normals(y, k[None])[0]
    p = ctx.relaxed(base, sliding, 0.5)
    fa = geo.project(ctx.frozen_field(y, p.at[k].set(0.0)))
    fb = geo.project(ctx.frozen_field(y, p.at[k].set(1.0)))
    return n_k @ fa, n_k @ fb


def decide(ctx, state, att, ov, ev, counts):
    """The event the step ends on handled: which side of a crossed surface, or onto it (an
    onset), or off a sliding surface (an exit). Returns (pattern, sliding set, whether an event
    was handled, whether it is the user's, whether it is the pending one, the surface crossed
    at the event (K: none), counts)."""
    M, sliding, geo = ctx.M, att.sliding, att.piece[1]
    flipped = att.pattern ^ ov.crossing
    at_pending = ev.advance & att.pending_here & ~ev.cut_here
    handle = at_pending | ev.immediate | ev.cut_here
    kind = jnp.where(at_pending, state.pending_kind, jnp.where(ev.immediate | ev.cut_here, ev.kind, 0))
    k = jnp.where(at_pending, state.pending_k, ev.k)
    y_ev = jnp.where(ev.advance, ov.yc, att.ya)
    base = jnp.where(ev.advance, flipped, att.pattern)
    is_cross, is_exit, is_user = kind == _CROSS, kind == _EXIT, kind == _USER

    one = jnp.ones((), ctx.dtype)
    a, b = jax.lax.cond(is_cross, lambda: _one_sided(ctx, y_ev, base, sliding, geo, k), lambda: (one, one))
    counts["extra_grad_evals"] += 2 * is_cross.astype(jnp.int32)
    attractive = (a > 0) & (b < 0)
    has_room = jnp.any(sliding < 0)
    candidate = sliding.at[jnp.argmax(sliding < 0)].set(k.astype(jnp.int32))
    onset = is_cross & attractive & has_room
    up = jnp.where((a > 0) & (b > 0), True, jnp.where((a < 0) & (b < 0), False, ~base[k]))
    # a crossing at the step's start that keeps its side is a grazing contact: the state lies
    # on the other side while the field points back; it takes the side where it lies
    graze = ev.immediate & is_cross & ~onset & (up == base[k])
    up = jnp.where(graze, att.s_a[k] > 0, up)
    crossed_pattern = base.at[k].set(up)
    # a crossing changes the field on the sliding set, and a weight may leave [0, 1] with it:
    # that exit is decided here, with the crossing, rather than found at the next step's start
    check = is_cross & ~onset & jnp.any(sliding >= 0)
    induced = jax.lax.cond(
        check,
        lambda: jnp.any((sliding >= 0) & (exit_margin(alphas(ctx, y_ev, crossed_pattern, sliding, geo)) < 0)),
        lambda: jnp.asarray(False),
    )
    counts["extra_grad_evals"] += 2 * check.astype(jnp.int32)
    # an onset or an exit changes the whole sliding set at once: the Filippov field of a
    # gradient flow is the minimal-norm element of the one-sided fields' convex hull
    # (`filippov_set`), which decides every surface of the set together. An exiting surface
    # leaves to the side its weight reached; the others are decided again without it.
    leaving = sliding.at[k].set(-1)
    exit_base = base.at[sliding[k]].set(ev.alpha_b[k] >= 0.5)
    cand = jnp.where(onset, candidate, jnp.where(is_exit, leaving, sliding))
    cand_base = jnp.where(is_exit, exit_base, jnp.where(induced, crossed_pattern, base))
    decide = onset | (is_exit & jnp.any(leaving >= 0)) | induced
    decided_pattern, decided_sliding = jax.lax.cond(
        decide, lambda: filippov_set(ctx, y_ev, cand_base, cand), lambda: (cand_base, cand)
    )
    counts["extra_grad_evals"] += (1 + (M if ctx.switching.jump is None else 1)) * decide.astype(jnp.int32)
    slide = onset & jnp.any(decided_sliding == k)
    new_pattern = jnp.where(is_cross & ~onset, crossed_pattern, base)
    new_pattern = jnp.where(onset | is_exit | induced, decided_pattern, new_pattern)
    new_sliding = jnp.where(onset | is_exit | induced, decided_sliding, sliding)
    left = jnp.sum((sliding >= 0) & ~jnp.isin(sliding, new_sliding))
    new_sliding = new_sliding[jnp.argsort(new_sliding < 0, stable=True)]  # compact (`_Geometry`)
    stepped_over = jnp.sum(ev.advance & ov.crossing)
    counts["num_crossings"] += (is_cross & ~slide & ~graze).astype(jnp.int32) + stepped_over
    counts["num_crossings_stepped_over"] += stepped_over
    counts["num_sliding_starts"] += slide.astype(jnp.int32)
    counts["num_sliding_exits"] += left.astype(jnp.int32)
    counts["sliding_overflow"] += (is_cross & attractive & ~has_room).astype(jnp.int32)
    counts["max_sliding"] = jnp.maximum(counts["max_sliding"], jnp.sum(new_sliding >= 0))
    crossed = jnp.where(is_cross & ~onset, k, ctx.K).astype(jnp.int32)  # K: none
    return new_pattern, new_sliding, handle, is_user, at_pending, crossed, counts
