"""Per-trajectory status codes.

A solve never raises inside jitted or vmapped code: it reports how it ended as an integer code,
so that a batch of trajectories keeps its good lanes when one lane fails.
"""

import diffrax
import jax.numpy as jnp
import numpy as np

SUCCESS = 0  #: reached t1
EVENT = 1  #: the user's event fired; the trajectory ends at ``t_event``
MAX_STEPS = 2  #: ``max_steps`` solver steps were not enough to reach t1
NONFINITE = 3  #: the flow blew up: a non-finite or overflowing state, or steps collapsed to round-off
FAILED = 4  #: any other solver failure (e.g. the event's root finder failed)
STALLED = 5  #: the switching solve stopped making progress (see `gflow.switching`); t_final says where

NAMES = ("success", "event", "max_steps", "nonfinite", "failed", "stalled")

#: the endings of a switching solve chosen by `switching=None` after which the plain solve is
#: run instead (`gflow.simulate`, `gflow.batching.solve_batch`): its progress guard fired, or
#: its steps collapsed / the state blew up (a flow that truly blows up does so plain too)
SWITCHING_FALLBACK = (STALLED, NONFINITE)


def falls_back(code):
    """Whether a switching solve that ended with `code` is solved again plain (`SWITCHING_FALLBACK`)."""
    return np.isin(np.asarray(code), SWITCHING_FALLBACK)


def name(code):
    """The status name of an integer code, or an array of names for an array of codes."""
    codes = np.asarray(code)
    if codes.ndim == 0:
        return NAMES[int(codes)]
    return np.array([NAMES[int(c)] for c in codes.ravel()], dtype=object).reshape(codes.shape)


def decide(*, reached=None, result=None, fired=False, stalled=False, nonfinite=False):
    """The status code of a solve, for every solve path (scalars or arrays of lanes).

    The base code is read from diffrax's `result` (successful → SUCCESS, max_steps_reached →
    MAX_STEPS, dt_min_reached → NONFINITE, anything else → FAILED) or, for a solve that runs its
    own loop, from `reached` (t1 reached → SUCCESS, else MAX_STEPS). Then, in increasing
    precedence: `stalled` → STALLED, `fired` (the user's event) → EVENT, `nonfinite` (a blow-up
    or steps collapsed to round-off) → NONFINITE. Returns int32 codes.
    """
    if (reached is None) == (result is None):
        raise ValueError("status.decide needs exactly one of `reached` or `result`")
    if result is not None:
        code = jnp.where(
            result == diffrax.RESULTS.successful,
            SUCCESS,
            jnp.where(result == diffrax.RESULTS.max_steps_reached, MAX_STEPS, FAILED),
        )
        nonfinite = nonfinite | (result == diffrax.RESULTS.dt_min_reached)
    else:
        code = jnp.where(reached, SUCCESS, MAX_STEPS)
    code = jnp.where(stalled, STALLED, code)
    code = jnp.where(fired, EVENT, code)
    code = jnp.where(nonfinite, NONFINITE, code)
    return code.astype(jnp.int32)
