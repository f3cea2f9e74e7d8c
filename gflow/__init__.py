"""gflow: training dynamics as the gradient-flow ODE dθ/dt = −∇L(θ), solved with diffrax.

Importing gflow enables float64 (opt out with the environment variable GFLOW_X64=0 before the
import) and sets the matmul precision to "highest".
"""

from . import _config  # noqa: F401  (float64 and matmul precision, before any array is made)
from . import baselines, data, events, losses, models, observables, status
from . import batching, sweep
from . import kinks, switching
from .flow import simulate, vector_field
from .losses import objective
from .trajectory import Trajectory

__all__ = [
    "Trajectory",
    "baselines",
    "batching",
    "data",
    "events",
    "losses",
    "models",
    "objective",
    "observables",
    "simulate",
    "status",
    "sweep",
    "switching",
    "vector_field",
]
__version__ = "0.1.0"
