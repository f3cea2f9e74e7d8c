"""Shared test set-up: float64 via gflow, and JAX's persistent compilation cache so that repeated
test runs do not pay the compile time again."""

import os
from pathlib import Path

import jax

import gflow  # noqa: F401  (enables float64)

_CACHE = Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", os.environ.get("GFLOW_JAX_CACHE", str(_CACHE)))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
