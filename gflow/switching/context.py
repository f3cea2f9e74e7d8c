"""The switching solve's problem context: the objective, its switching structure, the solver and
the tolerances, the observables and the event, with the fields and normals it needs evaluated on
the flat state y = ravel(θ).

`Problem` holds nothing that depends on a lane (the initial point, the time interval, the save
times or the scale-aware atol, which depends on θ0): those are in the stepper's state, so that
one `Problem` serves every lane of a `jax.vmap` over initial points.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._common import record
from . import sliding as _sliding
from .surfaces import Switching, crossing_buffer


class Problem(eqx.Module):
    """What the switching solve integrates (see `problem` for the arguments): dθ/dt = −∇L(θ)
    across the surfaces of `switching`, with K = prod(s_shape) switching functions, M sliding
    slots and B crossings stepped over per step."""

    objective: Callable
    switching: Switching
    args: Any
    solver: diffrax.AbstractSolver
    rtol: jax.Array
    atol: jax.Array | None  # None: scale-aware, per lane (`gflow._common.scale_aware_atol`)
    observables: dict
    event: Callable | None
    event_is_bool: bool | None = eqx.field(static=True)
    max_steps: jax.Array  # traced: another cap does not compile the solve again
    save_params: bool = eqx.field(static=True)
    unravel: Callable = eqx.field(static=True)
    s_shape: tuple = eqx.field(static=True)
    size: int = eqx.field(static=True)  # D, the length of the flat state
    dtype: Any = eqx.field(static=True)

    @property
    def K(self) -> int:
        return int(np.prod(self.s_shape))

    @property
    def M(self) -> int:
        return min(self.switching.max_sliding, self.K)

    @property
    def B(self) -> int:
        if self.switching.max_crossings is None:
            return crossing_buffer(self.K, self.size)
        return min(self.switching.max_crossings, self.K)

    @property
    def term(self) -> diffrax.ODETerm:
        return diffrax.ODETerm(self.piece_field)

    def call(self, fn, y, *extra):
        return fn(self.unravel(y), *extra, *(() if self.args is None else (self.args,)))

    def surfaces(self, y):
        """s(y), flat (K,)."""
        return jnp.ravel(self.call(self.switching.surfaces, y))

    def frozen_field(self, y, p):
        """−∇_θ L(θ, p): the smooth field of the piece selected by the (relaxed) pattern p."""
        return -jax.grad(lambda z: self.call(self.switching.objective, z, p.reshape(self.s_shape)))(y)

    def surface_normals(self, y, ks):
        """∇s_k, shape (len(ks), D)."""
        if self.switching.surface is None:
            _, vjp = jax.vjp(self.surfaces, y)
            return jax.vmap(lambda k: vjp(jax.nn.one_hot(k, self.K, dtype=self.dtype))[0])(ks)
        return jax.vmap(lambda k: jax.grad(lambda z: self.call(self.switching.surface, z, k))(y))(ks)

    def jump(self, y, p, k):
        """∂F/∂p_k of the unprojected field from the closed form `switching.jump`, flat (D,)."""
        return ravel_pytree(self.call(self.switching.jump, y, p.reshape(self.s_shape), k))[0]

    def jump_fields(self, y, p, geo, ks, field_in_p):
        """∂F/∂p_k (len(ks), D) of the piece's (projected) field; field_in_p: its linearisation in p."""
        if self.switching.jump is None:
            return jax.vmap(field_in_p)(jax.nn.one_hot(ks, self.K, dtype=self.dtype))
        return jax.vmap(lambda k: geo.project(self.jump(y, p, k)))(ks)

    def couplings(self, y, ks, fields):
        """n_k·u_m = ∇s_k(y)·u_m for k in ks (rows) and the vectors u_m of `fields` (columns)."""
        if self.switching.surface is None:
            return jax.vmap(lambda u: jax.jvp(self.surfaces, (y,), (u,))[1][ks])(fields).T

        def row(k):
            along = lambda u: jax.jvp(lambda z: self.call(self.switching.surface, z, k), (y,), (u,))[1]
            return jax.vmap(along)(fields)

        return jax.vmap(row)(ks)

    def relaxed(self, pattern, sliding, value):
        """The pattern as floats with every sliding surface's p set to `value`."""
        p = pattern.astype(self.dtype)
        return p.at[jnp.where(sliding >= 0, sliding, self.K)].set(value, mode="drop")

    def piece_field(self, t, y, piece):
        """The field of a piece (p, geometry) in diffrax's (t, y, args) form: Π F(y, p)."""
        p, geo = piece
        return _sliding.local(self, y, geo).project(self.frozen_field(y, p))

    def user_value(self, y):
        """The user's event as a float whose sign change is the event (a bool event: −1 once true)."""
        value = self.call(self.event, y)
        if self.event_is_bool:
            return jnp.where(value, -1.0, 1.0).astype(self.dtype)
        return jnp.asarray(value, self.dtype)

    def record(self, y):
        """What a trajectory stores at a save time (`gflow._common.record`)."""
        return record(self.objective, self.observables, self.save_params, self.unravel(y), self.args)


def problem(objective, switching, params0, args, rtol, atol, *, solver, observables, event, event_is_bool,
            max_steps, save_params) -> Problem:
    """The `Problem` of `gflow.flow`'s solve arguments; `params0` gives the shapes only (its
    values may differ per lane)."""
    y0, unravel = ravel_pytree(params0)
    extra = () if args is None else (args,)
    s_shape = jax.eval_shape(lambda y: switching.surfaces(unravel(y), *extra), y0).shape
    return Problem(
        objective, switching, args, solver, rtol, atol, observables, event, event_is_bool,
        jnp.asarray(max_steps, jnp.int32), save_params,
        unravel, s_shape, y0.shape[0], y0.dtype,
    )
