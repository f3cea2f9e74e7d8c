"""Shared test set-up: float64 via gflow, and JAX's persistent compilation cache so that repeated
test runs do not pay the compile time again.

The default test run is ~95% XLA compile and tracing (measured per test with
`jax.monitoring`: 876 s of compile and 209 s of tracing in 1,138 s of test time), so the
tests compile with LLVM's optimisation off (`--xla_backend_optimization_level=0`): 26% less
wall time on tests/test_switching.py + test_ncf.py (188 s → 140 s, cold cache). Neither level
uses fast math; results differ at round-off only (1.2e-16 on a two-layer flow, the same step
counts), and every test compares numbers within one process, i.e. at one level.
"""

import os
from pathlib import Path

_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    # before jax starts its backend; subprocesses of the tests (the CLI's) inherit it
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

import jax  # noqa: E402

import gflow  # noqa: F401,E402  (enables float64)

_CACHE = Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", os.environ.get("GFLOW_JAX_CACHE", str(_CACHE)))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
