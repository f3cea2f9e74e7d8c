"""`gflow kumar-haupt`: experiments C1–C4 on Kumar & Haupt's flow near and beyond the origin.

Homogeneous networks with locally Lipschitz gradients (no ReLU kinks): the single-layer squared
ReLU H(x; W) = Σ_j max(0, w_jᵀx)² (order L = 2) and the two-layer Σ_j v_j max(0, w_jᵀx)²
(L = 3), square loss ½Σ(H − y)², init w(0) = δ·w0 with ‖w0‖ = 1. Predictions from
`gflow.theory.ncf`, computed without training (spherical ascent of the NCF); claims and pass
criteria from science_B.md §C:

- C1 directional convergence: at ‖w‖ = ρ, 1 − cos(w, u*) ≤ 1e-3 at δ = 1e-4 and ∝ δ.
- C2 escape time: slope 1/(2N*) in ln(1/δ) for L = 2; ∝ δ^{−1} and → 1/(3N*δ) for L = 3.
- C3 sparsity kept: neurons small at escape stay O(δ) until the flow is at the first saddle,
  whose loss is that of the flow from δ'u* and of the pruned net.
- C4 saddle to saddle: plateau level against the one-neuron saddle; duration linear in ln(1/δ)
  (increment slopes within 10% of the chord, `criteria.increment_nonlinearity`); the neurons
  small at escape aligned, as a block and one by one, with the residual NCF's KKT points, which
  `ncf.kkt_points` finds from random starts (none taken from the flow).

Rows come from pure builders of the measurements (`gflow.theory.ncf`'s `c1_c2_verdicts`,
`c2_order3_verdicts`, `c3_verdicts`, `c4_verdicts`), each tested with wrong inputs; a row whose premise is absent
(no escape, no small neuron, no plateau) is not applicable.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import models
from ..theory import ncf
from . import figures
from . import verdicts as verdicts_io
from .criteria import outcome_label


def c1_c2_single_layer(deltas, width=10, seed=0):
    """C1 and C2 (L = 2) on the toy data with the single-layer squared ReLU."""
    X, y = ncf.toy_data()
    model = models.single_layer
    u0 = ncf.unit_init(jax.random.PRNGKey(seed), {"W": (width, 2)})
    N = ncf.ncf(model, X, ncf.correlation_labels("square", y))
    u_star, residual, _ = ncf.spherical_flow(N, u0)
    n_star = float(N(u_star))
    angles_star = np.degrees(np.arctan2(u_star["W"][:, 1], u_star["W"][:, 0]))
    rows = []
    for delta in deltas:
        traj = ncf.escape(model, u0, delta, X, y, n_star=n_star)
        W = np.asarray(traj.final_params["W"])
        norms = np.linalg.norm(W, axis=1)
        big = norms >= 1e-2 * norms.max()
        angle_err = np.abs(np.degrees(np.arctan2(W[:, 1], W[:, 0])) - angles_star)[big]
        phi = ncf.leading_order(N, u0, ncf.RHO / delta)
        rows.append({"delta": delta, "t_esc": float(traj.t_event),
                     "one_minus_cos": 1 - ncf.cosine(traj.final_params, u_star),
                     "leading_order": 1 - ncf.cosine(phi, u_star),
                     "max_angle_err_deg": float(np.max(angle_err)), "status": str(traj.status),
                     "W": W})
    verdicts = ncf.c1_c2_verdicts(rows, n_star, details={"kkt_residual": residual, "N_star": n_star,
                                                    "kkt_angles_deg": angles_star})
    return verdicts, {"rows": rows, "u0": u0, "u_star": u_star, "n_star": n_star}


def c2_two_layer(deltas, width=10, seed=0):
    """C2 (L = 3): t_esc ∝ δ^{−1} from a random w0, and t_esc → (δ^{−1} − ρ^{−1})/(3N*) from
    w0 = u*."""
    X, y = ncf.toy_data()
    model = ncf.two_layer_relu2
    u0 = ncf.unit_init(jax.random.PRNGKey(seed), {"W": (width, 2), "v": (width,)})
    N = ncf.ncf(model, X, ncf.correlation_labels("square", y))
    u_star, residual, _ = ncf.spherical_flow(N, u0)
    n_star = float(N(u_star))
    t_rand = [float(ncf.escape(model, u0, dl, X, y, order=3, n_star=n_star).t_event) for dl in deltas]
    t_star = [float(ncf.escape(model, u_star, dl, X, y, order=3, n_star=n_star).t_event)
              for dl in deltas]
    predicted = [ncf.escape_time(n_star, 3, dl, ncf.RHO) for dl in deltas]
    verdicts = ncf.c2_order3_verdicts(deltas, t_rand, t_star, predicted,
                                  details={"N_star": n_star, "kkt_residual": residual})
    return verdicts, {"deltas": list(deltas), "t_rand": t_rand, "t_star": t_star,
                      "predicted": predicted}


def c3_sparsity(deltas, width=20, seed=0, rho=0.1, small=0.05, delta_ref=1e-6, plateau_tol=0.01):
    """C3: the neurons small at escape stay O(δ) while the flow reaches the first saddle.

    Two-layer ReLU² (L = 3) on `ncf.c3_data`, w(0) = δ·w0. At escape (‖θ‖ = ρ) the set Z holds the
    neurons with ‖θ_j‖ < `small`·max_j ‖θ_j‖. For L = 3 they grow like ṙ = 3N_r r² under the
    residual NCF, so they blow up after a time ∝ 1/δ and end the plateau; "through the plateau"
    is therefore measured from escape to the plateau's midpoint in time (the plateau is
    [first L ≤ (1+tol)L_sad, first L ≤ (1−tol)L_sad]), where r(t)/r(t_esc) is bounded
    independently of δ. References for the plateau level, both without the small neurons: the
    flow from δ'·u* (u* the KKT point reached from w0, which is sparse) run past its escape, and
    the flow of the pruned net (Z set to exactly 0 at escape, where the flow keeps it) run to
    its limit.
    """
    X, y = ncf.c3_data()
    model = ncf.two_layer_relu2
    u0 = ncf.unit_init(jax.random.PRNGKey(seed), {"W": (width, X.shape[1]), "v": (width,)})
    N = ncf.ncf(model, X, ncf.correlation_labels("square", y))
    u_star, residual, _ = ncf.spherical_flow(N, u0)
    n_star = float(N(u_star))
    t_ref = ncf.escape_time(n_star, 3, delta_ref, rho)
    ref = ncf.through(model, jax.tree.map(lambda x: delta_ref * x, u_star), X, y, 2 * t_ref)
    l_ref = float(ref.final_loss)
    rows = []
    for delta in deltas:
        esc = ncf.escape(model, u0, delta, X, y, rho=rho, order=3, n_star=n_star)
        norms = np.asarray(ncf.neuron_norms(esc.final_params))
        in_z = norms < small * norms.max()
        pruned = jax.tree.map(lambda x: jnp.where(in_z.reshape((-1,) + (1,) * (x.ndim - 1)), 0.0, x),
                              esc.final_params)
        l_pruned = float(ncf.through(model, pruned, X, y, 20.0).final_loss)
        t_esc = float(esc.t_event)
        leave = ncf.through(model, jax.tree.map(lambda x: delta * x, u0), X, y, 20 * t_esc,
                        level=(1 - plateau_tol) * l_ref, num_saves=1000,
                        observables={"norms": ncf.neuron_norms})
        ts, loss = np.asarray(leave.ts), np.asarray(leave.loss)
        z_ratio = np.max(np.asarray(leave.observables["norms"])[:, in_z], axis=1) / delta
        t_in = float(ts[np.argmax(loss <= (1 + plateau_tol) * l_ref)])
        t_out = float(leave.t_event)
        plateau = (ts >= t_in) & (ts < t_out)
        window = (ts >= t_esc) & (ts <= 0.5 * (t_in + t_out))
        rows.append({"delta": delta, "t_esc": t_esc, "t_in": t_in, "t_out": t_out,
                     "num_z": int(in_z.sum()), "z_at_escape": float(z_ratio[np.argmax(ts >= t_esc)]),
                     "z_max_to_mid": float(np.max(z_ratio[window])) if window.any() else np.nan,
                     "plateau_level": float(np.median(loss[plateau])) if plateau.any() else np.nan,
                     "pruned_level": l_pruned, "status": str(leave.status),
                     "steps": int(leave.num_accepted_steps), "ts": ts, "loss": loss,
                     "z_ratio": z_ratio})
    verdicts = ncf.c3_verdicts(rows, l_ref, width, delta_ref, details={
        "N_star": n_star, "kkt_residual": residual,
        "u_star_neurons": int(np.sum(np.asarray(ncf.neuron_norms(u_star)) > 1e-3))})
    return verdicts, {"rows": rows, "L_ref": l_ref}


def c4_saddles(deltas, u0, u_star, plateau_tol=0.01, num_starts=64, seed=1):
    """C4: the single-layer toy's loss goes ½‖y‖² → first saddle → 0.

    Reference saddle level, computed without the multi-neuron flow: neurons that share a
    direction keep sharing it (their gradients are parallel), so the flow that leaves the origin
    along u* (whose large neurons share one direction) is a one-neuron flow; a single neuron
    cannot split, so its limit from ρ·û* is the first saddle (run as the m-neuron net with the
    other neurons at exactly 0, where the flow keeps them). `u_star` is the KKT point reached from
    `u0` (the C1 start). Plateau: [first L ≤ (1+tol)·L_sad, first L ≤ (1−tol)·L_sad].

    The residual NCF N_r(u) = (y − H(X; saddle))ᵀH(X; u) of the separable net is a sum of
    one-neuron NCFs, so its second-order positive KKT points are the blocks whose nonzero neurons
    share one local maximiser of the one-neuron N_r on the circle. Those maximisers come from
    `ncf.kkt_points` (`num_starts` random starts, seeded by `seed`, none from the flow; each
    checked for the KKT residual and the tangent Hessian). At the second drop (L = (1−tol)L_sad)
    the neurons small at escape (w_z) are compared with them: the block's cosine to the nearest
    KKT point and each neuron's (≥ 1% of the block's largest) cosine to its nearest maximiser.
    """
    X, y = ncf.toy_data()
    model = models.single_layer
    Us = np.asarray(u_star["W"])
    lead = np.argmax(np.linalg.norm(Us, axis=1))
    one = np.zeros_like(Us)
    one[lead] = ncf.RHO * Us[lead] / np.linalg.norm(Us[lead])
    saddle = ncf.through(model, {"W": jnp.asarray(one)}, X, y, 1e3)
    l_sad = float(saddle.final_loss)
    Nr = ncf.ncf(model, X, y - np.asarray(model(saddle.final_params, X)))
    kkt = ncf.kkt_points(Nr, {"W": jnp.zeros((1, 2))}, jax.random.PRNGKey(seed), num_starts=num_starts)
    directions = np.stack([np.asarray(k["u"]["W"][0]) for k in kkt])
    rows = []
    for delta in deltas:
        esc = ncf.escape(model, u0, delta, X, y, rho=0.5)
        norms = np.linalg.norm(np.asarray(esc.final_params["W"]), axis=1)
        small = norms < 0.05 * norms.max()
        t_hor = float(esc.t_event) + 20.0
        p0 = jax.tree.map(lambda x: delta * x, u0)
        entry = ncf.through(model, p0, X, y, t_hor, level=(1 + plateau_tol) * l_sad)
        leave = ncf.through(model, p0, X, y, t_hor, level=(1 - plateau_tol) * l_sad)
        ts, loss = np.asarray(leave.ts), np.asarray(leave.loss)
        in_plateau = (ts >= float(entry.t_event)) & np.isfinite(loss)
        reached = str(entry.status) == "event" and str(leave.status) == "event"
        block = np.asarray(leave.final_params["W"])[small]
        cos_block, cos_neurons = ncf.neuron_alignment(block, directions) if small.any() else (np.nan, [])
        rows.append({"delta": delta, "reached": reached,
                     "plateau_level": float(np.median(loss[in_plateau])) if in_plateau.any() else np.nan,
                     "t_in": float(entry.t_event), "t_out": float(leave.t_event),
                     "duration": float(leave.t_event - entry.t_event), "num_small": int(small.sum()),
                     "cos_block": cos_block, "cos_neurons": np.asarray(cos_neurons), "block": block,
                     "ts": ts, "loss": loss})
    # the whole curve, through the second drop, for the figure
    full = ncf.through(model, jax.tree.map(lambda x: deltas[-1] * x, u0), X, y, t_hor)
    kkt_details = {"kkt_directions_deg": np.degrees(np.arctan2(directions[:, 1], directions[:, 0])),
                   "kkt_values": [k["N"] for k in kkt], "kkt_residuals": [k["residual"] for k in kkt],
                   "kkt_hits": [k["hits"] for k in kkt], "num_starts": num_starts}
    verdicts = ncf.c4_verdicts(rows, l_sad, float(0.5 * np.sum(y**2)), kkt_details)
    return verdicts, {"rows": rows, "L_sad": l_sad, "directions": directions,
                      "full": (np.asarray(full.ts), np.asarray(full.loss))}


SETTINGS = {
    # quick mode leaves out the L = 3 sweep; tests check its formula exactly on the KKT ray
    "quick": {"c1": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8], "c2": None, "c3": [3e-3, 1e-3],
              "c4": [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]},
    "full": {"c1": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9],
             "c2": [1e-2, 3e-3, 1e-3, 3e-4, 1e-4], "c3": [1e-3, 1e-4],
             "c4": [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]},
}


PARTS = ("C1", "C2", "C3", "C4")


def run(out: Path, quick=False, parts=PARTS):
    """The experiments of `parts` (names of `PARTS`: C1 holds C1 and C2's L = 2 escape, which
    share their flows; C2 is the L = 3 escape sweep, full mode only; C4 starts from C1's u0 and
    u*, so C1's flows run for it too, its rows only when C1 is asked); returns the verdicts and
    writes them to `out`, with the figures when every part ran."""
    start = time.perf_counter()
    s = SETTINGS["quick" if quick else "full"]
    out.mkdir(parents=True, exist_ok=True)
    v1, r1 = c1_c2_single_layer(s["c1"]) if {"C1", "C4"} & set(parts) else ([], None)
    v1 = v1 if "C1" in parts else []
    v2, r2 = c2_two_layer(s["c2"]) if s["c2"] and "C2" in parts else ([], None)
    v3, r3 = c3_sparsity(s["c3"]) if "C3" in parts else ([], None)
    v4, r4 = c4_saddles(s["c4"], r1["u0"], r1["u_star"]) if "C4" in parts else ([], None)
    verdicts = v1 + v2 + v3 + v4
    verdicts_io.write(out, verdicts, {"paper": "Kumar & Haupt (arXiv 2402.09226, 2403.08121, "
                                      "2502.15952)", "mode": "quick" if quick else "full",
                                      "settings": s, "parts": list(parts), "rtol": ncf.RTOL,
                                      "wall_seconds": time.perf_counter() - start}, seeds=[0, 1])
    if set(parts) == set(PARTS):
        _plots(out, r1, r2, r3, r4, verdicts)
    return verdicts


def _plots(out, r1, r2, r3, r4, verdicts):
    plt = figures.pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0, 0]
    d = np.array([r["delta"] for r in r1["rows"]])
    ax.loglog(d, [r["one_minus_cos"] for r in r1["rows"]], "o", label="network flow")
    ax.loglog(d, [r["leading_order"] for r in r1["rows"]], "k-", lw=0.8,
              label=r"leading order $\delta\,\varphi$, $\dot\varphi=\nabla N(\varphi)$")
    ax.plot([3e-5, 3e-4], [1e-3, 1e-3], "r-", lw=2, label=r"pilot bound $10^{-3}$ at $\delta=10^{-4}$")
    ax.set(xlabel=r"$\delta$", ylabel=r"$1-\cos(W(t_\rho),u^*)$",
           title=f"C1 at $\\|W\\|=\\rho$: leading order {outcome_label(verdicts, 'C1', '1 − cos against')}, "
                 f"bound {outcome_label(verdicts, 'C1', '1 − cos(W')}")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(np.log(1 / d), [r["t_esc"] for r in r1["rows"]], "o", label="network flow (L = 2)")
    ax.plot(np.log(1 / d), [ncf.escape_time(r1["n_star"], 2, x, ncf.RHO) for x in d], "k-", lw=0.8,
            label=r"$\ln(\rho/\delta)/(2N^*)$")
    ax.set(xlabel=r"$\ln(1/\delta)$", ylabel=r"$t_{esc}$ ($\|W\|=\rho$)",
           title=f"C2 escape, L = 2: slope {outcome_label(verdicts, 'C2', 'slope')}")
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    if r2:
        ax.loglog(r2["deltas"], r2["t_rand"], "o", label="random $w_0$")
        ax.loglog(r2["deltas"], r2["t_star"], "s", mfc="none", label="$w_0=u^*$")
        ax.loglog(r2["deltas"], r2["predicted"], "k-", lw=0.8,
                  label=r"$(\delta^{-1}-\rho^{-1})/(3N^*)$")
        ax.legend(fontsize=8)
        ax.set_title(f"C2 escape, L = 3: exponent {outcome_label(verdicts, 'C2', 'L = 3: log')}")
    else:
        ax.text(0.5, 0.5, "C2, L = 3: full mode only", ha="center", transform=ax.transAxes)
        ax.axis("off")
    ax.set(xlabel=r"$\delta$", ylabel=r"$t_{esc}$")
    ax = axes[1, 0]
    for r in r4["rows"]:
        ax.plot(r["ts"], r["loss"], lw=1, label=rf"$\delta=10^{{{np.log10(r['delta']):.0f}}}$")
    ax.plot(*r4["full"], "k", lw=0.6, label="smallest δ, through the 2nd drop")
    ax.axhline(r4["L_sad"], color="k", ls=":", label="one-neuron saddle")
    ax.set(xlabel="t", ylabel=r"$\frac{1}{2}\sum_i (H-y_i)^2$", xscale="log", yscale="log",
           title=f"C4 loss: plateau level {outcome_label(verdicts, 'C4', 'plateau level')}")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    d4 = np.array([r["delta"] for r in r4["rows"]])
    dur = np.array([r["duration"] for r in r4["rows"]])
    x = np.log(1 / d4)
    ax.plot(x, dur, "o-", label="plateau duration (L within ±1%)")
    ax.plot(x[[0, -1]], dur[[0, -1]], "k:", label="chord (linear law)")
    ax.set(xlabel=r"$\ln(1/\delta)$", ylabel="duration",
           title=f"C4 duration linear in $\\ln(1/\\delta)$: "
                 f"{outcome_label(verdicts, 'C4', 'plateau duration')}")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    for e in r4["directions"]:
        ax.axhline(np.degrees(np.arctan2(e[1], e[0])), color="k", ls=":", lw=0.8)
    for r in r4["rows"]:
        B = r["block"]
        if B.size:
            size = np.linalg.norm(B, axis=1)
            ax.scatter(np.full(len(B), r["delta"]), np.degrees(np.arctan2(B[:, 1], B[:, 0])),
                       s=10 + 60 * size / size.max(), c="C0")
    ax.set(xscale="log", xlabel=r"$\delta$", ylabel="angle of $w_j$ (°)",
           title=f"C4 small neurons at the 2nd drop (size ∝ norm)\nper neuron "
                 f"{outcome_label(verdicts, 'C4', 'per neuron')}, block "
                 f"{outcome_label(verdicts, 'C4', 'cos(w_z')}; dotted: KKT maximisers of $N_r$")
    figures.save(fig, out / "kumar_haupt.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in r3["rows"]:
        label = rf"$\delta={r['delta']:g}$"
        a1.plot(r["delta"] * r["ts"], r["loss"], label=label)
        line, = a2.plot(r["delta"] * r["ts"], r["z_ratio"], label=label)
        a2.axvline(r["delta"] * 0.5 * (r["t_in"] + r["t_out"]), color=line.get_color(), ls=":")
    a1.axhline(r3["L_ref"], color="k", ls=":", label=r"flow from $\delta' u^*$")
    a1.set(xlabel=r"$\delta t$", ylabel=r"$\frac{1}{2}\sum_i (H-y_i)^2$", yscale="log",
           title=f"C3 loss (ReLU², d = 5, m = 20): level {outcome_label(verdicts, 'C3', 'first-plateau')}")
    a1.legend(fontsize=8)
    a2.set(xlabel=r"$\delta t$", ylabel=r"$\max_Z \|\theta_j\|/\delta$", yscale="log",
           title=f"C3 neurons small at escape (dotted: mid-plateau): {outcome_label(verdicts, 'C3', 'max_Z')}")
    a2.legend(fontsize=8)
    figures.save(fig, out / "c3_sparsity.png")

    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="polar")
    W = r1["rows"][-1]["W"]
    ax.scatter(np.arctan2(W[:, 1], W[:, 0]), np.linalg.norm(W, axis=1),
               label=rf"$W(t_\rho)$, $\delta={r1['rows'][-1]['delta']:g}$")
    U = np.asarray(r1["u_star"]["W"]) * ncf.RHO
    ax.scatter(np.arctan2(U[:, 1], U[:, 0]), np.linalg.norm(U, axis=1), marker="x",
               label=r"$\rho\, u^*$ (spherical ascent from $w_0$)")
    ax.set_title("C1 neurons at $\\|W\\| = \\rho$ against the KKT point", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    figures.save(fig, out / "c1_neurons.png", layout=False)


def register(subparsers):
    verdicts_io.register_study(subparsers, "kumar-haupt", "Kumar & Haupt's NCF and flows beyond "
                               "the origin: experiments C1–C4", run, "results/kumar_haupt",
                               rtol=False, parts=PARTS)
