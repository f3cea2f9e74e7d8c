"""Per-trajectory status codes.

A solve never raises inside jitted or vmapped code: it reports how it ended as an integer code,
so that a batch of trajectories keeps its good lanes when one lane fails.
"""

import numpy as np

SUCCESS = 0  #: reached t1
EVENT = 1  #: the user's event fired; the trajectory ends at ``t_event``
MAX_STEPS = 2  #: ``max_steps`` solver steps were not enough to reach t1
NONFINITE = 3  #: the flow blew up: a non-finite or overflowing state, or steps collapsed to round-off
FAILED = 4  #: any other solver failure (e.g. the event's root finder failed)
STALLED = 5  #: the switching solve stopped making progress (see `gflow.switching`); t_final says where

NAMES = ("success", "event", "max_steps", "nonfinite", "failed", "stalled")


def name(code):
    """The status name of an integer code, or an array of names for an array of codes."""
    codes = np.asarray(code)
    if codes.ndim == 0:
        return NAMES[int(codes)]
    return np.array([NAMES[int(c)] for c in codes.ravel()], dtype=object).reshape(codes.shape)
