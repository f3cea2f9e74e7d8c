"""The result type of a gradient-flow solve."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from . import status as _status


class Trajectory(eqx.Module):
    """An immutable record of one gradient-flow trajectory θ(t), dθ/dt = −∇L(θ).

    It is a pytree, so a `jax.vmap` of `gflow.simulate` returns one `Trajectory` whose leaves
    carry a leading batch axis.

    **Attributes:**

    - `ts`: the save times, shape `(T,)`. Entries after an event time are `nan`.
    - `params`: the parameters at `ts`, the pytree of `params0` with a leading time axis, or
      `None` when solved with `save_params=False`. Entries after an event are `nan`.
    - `loss`: the objective L(θ(t)) at `ts`, shape `(T,)`.
    - `observables`: dict name → values at `ts` (leading axis `T`), one per observable given.
    - `status_code`: integer status (see `gflow.status`); `status` gives its name.
    - `t_final`: the time the solve ended: `t1`, the event time, or where it stopped.
    - `t_event`: the located event time, or `nan` when no event fired.
    - `final_params`: θ at `t_final` (always stored: it is one state, not a history).
    - `num_steps`: solver steps attempted (accepted + rejected), as in diffrax.
    - `num_accepted_steps`, `num_rejected_steps`: their split.
    - `num_grad_evals`: evaluations of ∇L implied by the solver's tableau: stages per attempted
      step (one fewer for first-same-as-last solvers) plus the initial evaluation. For
      `gflow.baselines.gradient_descent`, the number of steps.
    - `stats`: dict of further solver statistics (e.g. switching-surface counts).
    """

    ts: Array
    params: PyTree | None
    loss: Array
    observables: dict[str, Any]
    status_code: Array
    t_final: Array
    t_event: Array
    final_params: PyTree
    num_steps: Array
    num_accepted_steps: Array
    num_rejected_steps: Array
    num_grad_evals: Array
    stats: dict[str, Any] = eqx.field(default_factory=dict)

    @property
    def status(self):
        """Status name ("success", "event", "max_steps", "nonfinite", "failed"); an array of
        names for a batch of trajectories."""
        return _status.name(self.status_code)

    @property
    def ok(self):
        """True where the trajectory reached t1 or stopped at its event."""
        return (self.status_code == _status.SUCCESS) | (self.status_code == _status.EVENT)

    @property
    def final_loss(self):
        """The objective at `t_final`: the last finite entry of `loss`."""
        finite = jnp.isfinite(self.loss)
        idx = jnp.max(jnp.where(finite, jnp.arange(self.loss.shape[-1]), 0), axis=-1)
        return jnp.take_along_axis(self.loss, jnp.expand_dims(idx, -1), axis=-1)[..., 0]
