"""The result type of a gradient-flow solve, and the one function that builds it.

Every solve path (the plain diffrax solve, the switching solve, the pool of lanes) ends in
`assemble`, so that every `Trajectory` masks what lies beyond t_final the same way, counts ∇L
evaluations the same way and carries the same `stats` keys (`STATS`).
"""

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
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
    - `stats`: dict of further solver statistics, the keys `STATS` on every solve path (zero
      where a count does not apply, e.g. crossings on the plain solve).
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


#: The `Trajectory.stats` keys that every solve path fills (int32 counts; zero where a count
#: does not apply). The switching solve's counts (see `gflow.switching.integrate`):
#: num_crossings (all crossings), num_crossings_stepped_over (those crossed inside a step with
#: the kink correction), num_sliding_starts, num_sliding_exits, max_sliding (most surfaces
#: sliding at once), sliding_overflow, extra_grad_evals (∇L evaluations for event decisions and
#: exit checks, included in `num_grad_evals`), num_steps_shortened (steps ended early for the
#: kinks' error), sliding_final (surfaces sliding at t_final); and `gflow.simulate`'s
#: switching (1 where the switching solve ran), switching_fallback (1 where the switching
#: solve chosen by default stalled or collapsed and the plain solve was run instead:
#: `gflow.status.SWITCHING_FALLBACK`) and switching_reason (why that solve ran, a code of
#: `gflow.options.SWITCHING_REASONS`: 0 switching, 1 no kinks, 2 rtol ≥ SWITCHING_MAX_RTOL,
#: 3 K > SWITCHING_MAX_SURFACES, 4 switching=False, 5 fell back).
STATS = (
    "num_crossings",
    "num_crossings_stepped_over",
    "num_sliding_starts",
    "num_sliding_exits",
    "max_sliding",
    "sliding_overflow",
    "extra_grad_evals",
    "num_steps_shortened",
    "sliding_final",
    "switching",
    "switching_fallback",
    "switching_reason",
)


def grad_evals_per_step(solver) -> tuple[int, int]:
    """(evaluations of ∇L per attempted step, evaluations at start) for a diffrax `solver`.

    Explicit Runge–Kutta methods evaluate the field once per stage; first-same-as-last (FSAL)
    methods reuse the last stage of the previous step and pay one extra evaluation at t0.
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not hasattr(tableau, "num_stages"):
        return 1, 0
    if tableau.fsal:
        return tableau.num_stages - 1, 1
    return tableau.num_stages, 0


def full_stats(stats: Mapping[str, Any], like) -> dict:
    """`stats` with every key of `STATS`: missing counts are int32 zeros shaped like `like`
    (the status code: a scalar, or one per point). Keys outside `STATS` are an error."""
    unknown = set(stats) - set(STATS)
    if unknown:
        raise ValueError(f"stats keys {sorted(unknown)} are not in gflow.trajectory.STATS")
    zero = jnp.zeros(jnp.shape(like), jnp.int32)
    return {k: jnp.asarray(stats[k], jnp.int32) if k in stats else zero for k in STATS}


def assemble(
    *,
    ts,
    reached,
    saved,
    status_code,
    t_final,
    final_params,
    num_steps,
    num_accepted_steps,
    num_rejected_steps,
    solver,
    t_event=None,
    stats: Mapping[str, Any] | None = None,
    solved=None,
) -> Trajectory:
    """The `Trajectory` of a solve, for every solve path.

    - `ts`: the requested save times; `reached` (same shape, or with a leading point axis)
      marks those ≤ t_final. Save times and saved values past t_final become NaN.
    - `saved`: the records at the save times, `{"loss", "observables", "params"}` as written
      by `gflow.flow.record` (leading time axis).
    - `status_code`: from `gflow.status.decide`.
    - `t_event`: the located event time; by default t_final where the status is "event".
    - `solver`: the diffrax solver, for `num_grad_evals` = stages per attempted step ·
      num_steps + the initial evaluation (see `grad_evals_per_step`) + stats["extra_grad_evals"].
    - `stats`: counts keyed by names in `STATS`; the others are filled with zeros.
    - `solved`: for a batch with padding rows, False on the rows never solved (their
      `num_grad_evals` is 0).
    """
    stats = full_stats(stats or {}, status_code)

    def mask(x):
        keep = reached.reshape(reached.shape + (1,) * (x.ndim - reached.ndim))
        return jnp.where(keep, x, jnp.nan)

    saved = jax.tree.map(mask, saved)
    if t_event is None:
        t_event = jnp.where(status_code == _status.EVENT, t_final, jnp.nan)
    per_step, at_start = grad_evals_per_step(solver)
    grad_evals = num_steps * per_step + at_start + stats["extra_grad_evals"]
    if solved is not None:
        grad_evals = jnp.where(solved, grad_evals, 0)
    return Trajectory(
        ts=jnp.where(reached, ts, jnp.nan),
        params=saved["params"],
        loss=saved["loss"],
        observables=saved["observables"],
        status_code=status_code,
        t_final=t_final,
        t_event=t_event,
        final_params=final_params,
        num_steps=num_steps,
        num_accepted_steps=num_accepted_steps,
        num_rejected_steps=num_rejected_steps,
        num_grad_evals=grad_evals,
        stats=stats,
    )
