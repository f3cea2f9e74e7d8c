"""Small pure functions that turn measurements into pass/fail decisions for the paper studies.

Each takes plain numbers or arrays and no flow, so a test can feed it a deliberately wrong input
(a nonlinear sequence, a wrong exponent, a loss that is still falling) and see it fail.
"""

import numpy as np
from scipy import stats


def fitted_slope(x, y):
    """Least-squares slope of y on x and its 95% confidence interval (Student t, n − 2 dof);
    needs at least 3 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3:
        raise ValueError(f"a slope with a confidence interval needs at least 3 points, got {x.size}")
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, x.size - 2) * fit.stderr
    return float(fit.slope), [float(fit.slope - half), float(fit.slope + half)]


def interval_within(interval, centre, tol):
    """True if the whole interval [lo, hi] lies inside [centre − tol, centre + tol]: a fitted
    value passes on its confidence interval, not on its point estimate."""
    lo, hi = interval
    return bool(centre - tol <= lo and hi <= centre + tol)


def max_relative_deviation(measured, reference):
    """max_k |measured_k / reference_k − 1|; nan if any value is nan (a missing reading), which
    fails every ≤ comparison."""
    return float(np.max(np.abs(np.asarray(measured, float) / np.asarray(reference, float) - 1)))


def increment_nonlinearity(x, y):
    """How far y is from linear in x: max_k |s_k / s − 1| over the slopes s_k = Δy_k/Δx_k between
    consecutive points, s the chord slope (y_last − y_first)/(x_last − x_first). Zero for a line;
    durations with increments 0.041, 0.047, 0.078, 0.094 at equal steps of x give 0.37."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3:
        raise ValueError(f"linearity needs at least 3 points, got {x.size}")
    chord = (y[-1] - y[0]) / (x[-1] - x[0])
    return float(np.max(np.abs(np.diff(y) / np.diff(x) / chord - 1)))


def late_decrease(ts, loss, *, since=0.5):
    """(L(since·T) − L(T)) / L(T), T = ts[-1]: the loss's relative decrease over the last part of
    the horizon, read at the first save ≥ since·T. A flow at a stationary point gives ~0; one
    still training (L ∝ 1/t gives 1 for since = 0.5) does not."""
    ts, loss = np.asarray(ts, float), np.asarray(loss, float)
    k = int(np.argmax(ts >= since * ts[-1]))
    return float((loss[k] - loss[-1]) / loss[-1])


def outcome_label(verdicts, experiment, quantity_start=""):
    """'pass', 'FAIL' or 'n/a' of the first row of `experiment` whose quantity starts with
    `quantity_start` ('not run' if none), so that a figure's title says what its verdict says."""
    for v in verdicts:
        if v.experiment == experiment and v.quantity.startswith(quantity_start):
            return {"pass": "pass", "fail": "FAIL", "not-applicable": "n/a"}[v.outcome]
    return "not run"
