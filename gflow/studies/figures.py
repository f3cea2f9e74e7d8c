"""What the figures of every study share: a headless pyplot, one way to save a figure, plain
tick labels on log axes and a fitted power law drawn through seed means."""

import numpy as np


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (studies run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path, *, bbox=None, layout=True):
    """Write `fig` to `path` at 110 dpi and close it: laid out by `tight_layout` when `layout`
    and `bbox` is None; `bbox="tight"` trims the saved box to the drawn artists instead."""
    import matplotlib.pyplot as plt

    if bbox is None and layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches=bbox)
    plt.close(fig)


def log_ticks(ax, values):
    """Plain-number labels on log axes (no colliding minor labels): the x ticks at exactly
    `values`, the y ticks at 1, 2 and 5 times the powers of ten."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    for target in (ax.xaxis, ax.yaxis):
        target.set_major_formatter(plain)


def power_fit(ax, x, T, slope, lo, hi, color, label):
    """The fitted power law T ∝ x^slope through the seed-mean of ln T (log-log least squares:
    the line passes through (mean ln x, mean ln T)), labelled with its interval [lo, hi]."""
    logT = np.log(np.asarray(T, float)).mean(axis=0)
    lx = np.log(x)
    anchor = logT.mean() - slope * lx.mean()
    ax.plot(x, np.exp(anchor + slope * lx), "-", color=color, lw=1, label=f"{label}: slope {slope:.3f} [{lo:.3f}, {hi:.3f}]")
