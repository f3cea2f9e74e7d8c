"""Every private name of diffrax (and of its equinox internals) that gflow uses, in one place.

diffrax does not promise these names between releases; `tests/test_diffrax_private.py` checks
each one (that it exists and behaves as gflow relies on) and fails with a message naming it when
a diffrax release changes it. pyproject.toml pins diffrax to the minor series they were checked
against.

- `WrapTerm(term, direction)`: the wrapper `diffrax.diffeqsolve` puts around the user's term
  for the direction of time. The pool of `gflow.batching` steps its lanes with the same wrapped
  term so that its PID controller makes the same first-step choice as `diffeqsolve` (a
  `WrapTerm` is not an `ODETerm`, so the controller starts from dt0 = 0.01 instead of its
  error-estimate heuristic), and takes exactly the steps of `gflow.simulate`.
- `prevbefore(x)`: the float just below x (`equinox.internal`); `diffeqsolve` keeps a step that
  ends within 100 ULP of t1 clipped to t1 with it, and the pool does the same.
"""

from diffrax._term import WrapTerm
from equinox.internal import prevbefore

__all__ = ["WrapTerm", "prevbefore"]
