"""Event conditions for `gflow.simulate(..., event=...)`.

An event is a function of the parameters returning a float (the flow stops where it changes
sign) or a bool (the flow stops where it first becomes true); gflow locates the time on the
solver's dense output. These factories build the common ones.
"""

import jax.numpy as jnp

from .observables import aligned


def loss_below(objective, threshold):
    """Stop when L(θ) falls to `threshold`: the float event L(θ) − threshold."""

    def event(params):
        return objective(params) - threshold

    return event


def escape(objective, params0, fraction=0.5):
    """Stop when the loss falls to `fraction` of its initial value (the escape time t_esc of
    Min et al. 2024 for fraction ½)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    return loss_below(objective, fraction * float(objective(params0)))


def alignment_event(X, y, delta=1e-2):
    """Stop at t_align(δ) of Min, Mallada & Vidal (2024): the first time every neuron is dead or
    aligned in its own cone (`gflow.observables.aligned`). A bool event."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}: it is a tolerance on a cosine")

    def event(params):
        return jnp.all(aligned(params, X, y, delta))

    return event
