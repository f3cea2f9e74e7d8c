"""What every solve path shares: the scale-aware atol, the step floor and the blow-up test, the
record kept at a save time, the progress meter and the count of gradient evaluations per step.

`gflow.flow` (the plain solve, `simulate`) and `gflow.switching` (the switching solve) both import
from here, so neither imports the other's internals; `gflow.flow` re-exports these names.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .options import call_args as _call_args
from .trajectory import grad_evals_per_step  # noqa: F401 - re-exported

# scale-aware atol = rtol · ATOL_FRACTION · rms(θ0) (`gflow.flow`'s docstring)
ATOL_FRACTION = 1e-2


def record(objective, observables, save_params, params, args):
    """What a trajectory stores at a save time: the loss, the observables (booleans as floats,
    so that they can be saved in float buffers) and, if `save_params`, the parameters."""
    call = _call_args(params, args)
    dtype = jnp.result_type(*jax.tree.leaves(params))

    def as_saved(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.bool_) else x

    return {
        "loss": objective(*call),
        "observables": {k: jax.tree.map(as_saved, f(*call)) for k, f in observables.items()},
        "params": params if save_params else None,
    }


def progress_meter(progress) -> diffrax.AbstractProgressMeter:
    """The diffrax progress meter for `simulate(progress=)`: a meter as given, True a tqdm bar."""
    if isinstance(progress, diffrax.AbstractProgressMeter):
        return progress
    return diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()


def _blowup_threshold(dtype) -> float:
    # Far beyond any trained network, far below overflow of the gradient's products.
    return float(np.sqrt(np.finfo(dtype).max)) * 1e-4


def blown_up(y, threshold):
    """True where the state pytree `y` is non-finite or has an entry beyond `threshold`."""
    leaves = jax.tree.leaves(y)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    big = jnp.any(jnp.stack([jnp.max(jnp.abs(x)) > threshold for x in leaves]))
    return ~finite | big


def _dtmin(t0, t1):
    # A step below the round-off of t cannot advance the solution: the flow is singular there
    # (finite-time blow-up, or a non-finite gradient that makes every step fail).
    eps = jnp.finfo(t0.dtype).eps
    return 64 * eps * jnp.maximum(jnp.abs(t0), jnp.abs(t1))


def scale_aware_atol(params0, rtol):
    """atol = max(rtol · ATOL_FRACTION, 16·eps) · rms(θ0) (see module docstring); rms → 1e-10
    if θ0 = 0."""
    leaves = [jnp.ravel(x) for x in jax.tree.leaves(params0)]
    flat = jnp.concatenate(leaves)
    rms = jnp.sqrt(jnp.mean(flat**2))
    fraction = jnp.maximum(rtol * ATOL_FRACTION, 16 * jnp.finfo(flat.dtype).eps)
    return fraction * jnp.where(rms > 0, rms, 1e-10)
