"""What the figures of every study share: a headless pyplot, one way to save a figure, plain
tick labels on log axes, a fitted power law drawn through seed means, and two views of a
two-layer net on two-class data: each neuron's cosine to its own class's mean over time
(`cosine_traces`) and its largest first-layer rows as images (`weight_rows`); and the figure
of one `gflow run` (`run_figure`)."""

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


def cosine_traces(plt, out, k, title):
    """Lane `k` of a two-layer run `out` (trace["t"], trace["cos"][lane, save, neuron, class],
    final_params["v"], t_align, mu_hat, optionally t_esc): cos(w_j, x̄_own class) over t for
    every neuron (own class: + if v_j > 0), with t_align and t_esc marked, or a note why there
    is no t_align. Returns the figure."""
    tr = out["trace"]
    t = tr["t"][k]
    v = out["final_params"]["v"][k]
    order = np.argsort(t)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for j in range(len(v)):
        own = tr["cos"][k, :, j, 0 if v[j] > 0 else 1]
        ax.semilogx(t[order], own[order], color="C0" if v[j] > 0 else "C3", lw=0.6)
    if np.isfinite(out["t_align"][k]):
        ax.axvline(out["t_align"][k], color="k", ls="--", lw=0.8, label=r"$t_{\rm align}$")
    else:
        ax.text(0.02, 0.04, f"no t_align: the data are not μ-separated (μ̂ = {out['mu_hat'][k]:.2f} < 0),\n"
                "so the cone condition of t_align need not hold", transform=ax.transAxes, fontsize=8,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    if "t_esc" in out and np.isfinite(out["t_esc"][k]):
        ax.axvline(out["t_esc"][k], color="k", ls=":", lw=0.8, label=r"$t_{\rm esc}$: $L = L(0)/2$")
    ax.plot([], [], color="C0", label=r"$v_j>0$: $\cos(w_j,\bar x_+)$")
    ax.plot([], [], color="C3", label=r"$v_j<0$: $\cos(w_j,\bar x_-)$")
    ax.set(xlabel="t", ylabel=r"$\cos(w_j, \bar x_{\rm own\ class})$", title=title, ylim=(-1, 1.02))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def weight_rows(plt, out, k, name):
    """The 16 largest first-layer rows w_j of lane `k` of `out` (square images, e.g. 8×8 digits)
    on one colour scale, titled with the sign of v_j. Returns the figure."""
    W = out["final_params"]["W"][k][:, : out["specs"][k]["d"]]
    side = int(round(np.sqrt(W.shape[1])))
    norms = np.linalg.norm(W, axis=1)
    top = np.argsort(norms)[::-1][:16]
    scale = np.max(np.abs(W[top]))
    fig, axes = plt.subplots(2, 8, figsize=(11, 3.6), constrained_layout=True)
    for ax, j in zip(axes.ravel(), top):
        image = ax.imshow(W[j].reshape(side, side), cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_title(f"#{j}, v{'>' if out['final_params']['v'][k][j] > 0 else '<'}0", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.9, label=r"entry of $w_j$")
    fig.suptitle(f"{name}: the 16 largest first-layer rows $w_j$ ({side}×{side} pixels) at "
                 f"t = {np.nanmax(out['trace']['t'][k]):g}", fontsize=10)
    return fig


def run_figure(traj, final, v_sign, t1, path):
    """flow.png of `gflow run`: loss and cosines to x̄_± at the save times reached and at t_final
    (`final`: their values there); a run that stopped before t1 is drawn on [0, t1] with the
    stop marked."""
    plt = pyplot()

    t_stop = float(traj.t_final)
    reached = np.asarray(traj.ts) <= t_stop
    ts = np.append(np.asarray(traj.ts)[reached], t_stop)

    def series(saved, at_stop):
        return np.concatenate([np.asarray(saved)[reached], np.asarray(at_stop)[None]])

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.semilogy(ts, series(traj.loss, final["loss"]))
    ax1.set(xlabel="t", ylabel="L(θ(t))", title="loss")
    for name, ls in (("cos_plus", "-"), ("cos_minus", ":")):
        cos = series(traj.observables[name], final[name])
        for j in range(cos.shape[1]):
            ax2.plot(ts, cos[:, j], ls, color="C0" if v_sign[j] > 0 else "C3", lw=0.6)
    ax2.set(xlabel="t", ylabel="cos(w_j, x̄_±)", title="alignment (solid x̄₊, dotted x̄₋; blue v>0)")
    if not bool(traj.ok):
        for ax in (ax1, ax2):
            ax.set_xlim(0.0, t1)
            ax.axvline(t_stop, color="k", ls="--", lw=1)
        fig.suptitle(f"stopped at t = {t_stop:.4g} of {t1:g}: {traj.status}", color="C3")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
