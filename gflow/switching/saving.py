"""Saving: what the switching solve records at the save times, read off each kept step's dense
output. Between a step's ends the state is the frozen piece's dense output plus the first-order
kink correction Σ_k Δp_k (t − τ_k)⁺ ∂F/∂p_k of the crossings stepped over; at and after the
step's end it is the corrected end state."""

import jax
import jax.numpy as jnp


def buffers(ctx, y0, T):
    """The save buffers: T rows of what `ctx.record` returns, NaN (0 for integers) until saved."""
    rec_shape = jax.eval_shape(ctx.record, y0)
    return jax.tree.map(
        lambda s: jnp.full((T,) + s.shape, jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else 0, s.dtype),
        rec_shape,
    )


def dense_output(ctx, att, ov, t):
    """The state at t in the step [t_a, t_b] with its kinks stepped over."""
    p, geo = att.piece
    c = jnp.where(ov.crossing, jnp.where(att.pattern, -1.0, 1.0) * jnp.maximum(t - ov.found.tau, 0.0), 0.0)
    _, correction = jax.jvp(lambda q: ctx.piece_field(t, att.ya, (q, geo)), (p,), (c,))
    return jnp.where(t >= ov.tb, ov.yc, att.interp.evaluate(t) + correction)


def save(ctx, state, att, ov, advance):
    """The save times in a kept step recorded: (next save index, buffers)."""
    ts = state.ts
    T = ts.shape[0]

    def cond(c):
        i, _ = c
        return advance & (i < T) & (ts[jnp.minimum(i, T - 1)] <= ov.tb)

    def body(c):
        i, saved = c
        rec = ctx.record(dense_output(ctx, att, ov, ts[i]))
        return i + 1, jax.tree.map(lambda buf, r: buf.at[i].set(r), saved, rec)

    return jax.lax.while_loop(cond, body, (state.save_index, state.saved))
