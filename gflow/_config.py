"""Numerical defaults applied when gflow is imported.

float64 is on by default (`jax_enable_x64`), because gradient flows from small initialisation
span many orders of magnitude and float32 loses the early phase. Opt out before importing gflow
with the environment variable ``GFLOW_X64=0``; float32 arrays passed in are then kept as they
are. Matmul precision is set to "highest" so that float32 runs on GPU do not silently use TF32.
"""

import os

import jax


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off", "")


X64 = _truthy(os.environ.get("GFLOW_X64", "1"))
jax.config.update("jax_enable_x64", X64)
jax.config.update("jax_default_matmul_precision", "highest")
