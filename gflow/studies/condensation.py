"""`gflow condensation`: experiments D1–D4 of science_B §D (Zhou et al., NeurIPS 2022) as
gradient flows, with the automatic orientation count of `gflow.condensation`.

- D1 (d = 1, the data of the paper's Fig. 5, N(0, σ0²) init): K_line = p for tanh, x·tanh x,
  x²·tanh x in ≥ 80% of seeds, K ≤ 2p (the headline) and centroids within cos ≥ 0.98 of the
  leading-order directions of `gflow.theory.zhou2022`.
- D1-equal: D1 from the same directions with every ‖w_j‖ = σ0 = 5e−3 and a_j = ±σ0, which
  removes the lottery of initial norms that makes p ≥ 2 winner-take-all under gradient flow,
  so that the count rows run on flows that condensed.
- D2 (d = 5, the data of Fig. 2): p = 1 gives one line with quality ≥ 0.9 (tanh: K = 2);
  x·tanh x gives K ∈ {3, 4}; x²·tanh x gives K ≤ 6 and K ≤ the KKT count of T_3; ReLU is
  recorded only.
- D3: after the stopping time the count K(t) does not fall as the loss falls.
- D4 (the residual net of Fig. 3): lines per layer 3, 2, 1, 1, 1 (the multiplicities).
- D1-Adam, a labelled cross-check and not a gradient flow: D1 trained by full-batch Adam with the
  paper's settings (`adam_stage`), to show whether the paper's optimiser gives the 2p
  orientations that the gradient flow does not.

Every row is a criterion of `gflow.theory.zhou2022`; a count bound (K ≤ 2p, K ≤ KKT count,
K(t) ≥ K(T_stop)) is not applicable where nothing condensed (K = 0), never a pass. The "initial
stage" ends at T_stop, the first time R_S ≤ 0.99·R_S(0); the norm cap max_j ‖w_j‖ =
30·σ0·√(d+1) is only the fallback for a flow that never gets there (science_B §D [P]). Writes
the verdicts, summary and manifest (`gflow.studies.verdicts.write`), heat maps
`heatmaps_D1.png`, `heatmaps_D1_equal.png`, `heatmaps_D2.png`, `heatmaps_D4.png`,
`directions_D1.png` and `counts_D3.png` into --out.
"""

import time
from pathlib import Path

import numpy as np

from ..theory import zhou2022
from . import verdicts as verdicts_io

P1 = ("tanh", "sigmoid", "softplus")


def fig5_data():
    """d = 1: 40 points on [−1, 1.5], f*(x) = sin 3x + ½ sin 6x (Zhou et al., Figs. 5–6)."""
    x = np.linspace(-1.0, 1.5, 40)
    return x[:, None], np.sin(3 * x) + np.sin(6 * x) / 2


def fig2_data(seed, n=80, d=5):
    """d = 5: x_k ~ U[−4, 2], f*(x) = Σ_k 3.5·sin(5x_k + 1), n = 80 (Zhou et al., Fig. 2)."""
    X = np.random.default_rng(seed).uniform(-4.0, 2.0, (n, d))
    return X, (3.5 * np.sin(5 * X + 1)).sum(axis=1)


def init_scale(activation):
    """σ0 = 1e−4 for p ≤ 1 (and ReLU), 1e−3 for p = 2, 3 (science_B §D [P])."""
    return 1e-3 if activation in ("xtanh", "x2tanh") else 1e-4


ACTIVATIONS = ("tanh", "sigmoid", "softplus", "xtanh", "x2tanh", "relu")


def _sigma(index, z):
    # The activation is chosen by a traced index, so that one compiled solve serves all six.
    import jax

    from .. import models

    return jax.lax.switch(index, [models.ACTIVATIONS[a] for a in ACTIVATIONS], z)


def _risk(params, args):
    """R_S = (1/2n) Σ_i (f(x_i) − y_i)², f = Σ_j a_j σ(w_j·x̃) (Zhou et al., eq. 2)."""
    from .. import models

    f = _sigma(args["activation"], models.with_bias(args["X"]) @ params["W"].T) @ params["a"]
    return 0.5 * ((f - args["y"]) ** 2).mean()


def _stop(params, args):
    """R_S ≤ risk_stop, or max_j ‖w_j‖ ≥ w_max (∞ unless the fallback is in use)."""
    import jax.numpy as jnp

    big = jnp.linalg.norm(params["W"], axis=1).max() >= args["w_max"]
    return (_risk(params, args) <= args["risk_stop"]) | big


def _flow_stages(risk, stop, params0, args, w_cap, rtol, t1, later):
    """The stopping rule of science_B §D [P] for any net: flow from params0 to T_stop, the first
    time R_S ≤ 0.99·R_S(0); only if the flow never gets there before t1 (or fails), to the
    fallback where a row norm reaches w_cap. Then, for each fraction in `later` (decreasing,
    < 0.99), on to where R_S = fraction·R_S(0). `stop(params, args)` must fire on R_S ≤
    args["risk_stop"] or a row norm ≥ args["w_max"]. Every solve reuses one compiled solve:
    the rules differ only in args.

    Returns (params at T_stop and at each later stop, their times, R_S/R_S(0) there, the rule
    that set T_stop, the status and step count of the solve to T_stop)."""
    import jax.numpy as jnp

    from .. import simulate

    risk0 = risk(params0, args)
    args = dict(args, risk_stop=0.99 * risk0, w_max=jnp.asarray(np.inf))
    traj = simulate(risk, params0, t1, rtol=rtol, event=stop, args=args, save_params=False)
    rule = "loss"
    if str(traj.status) != "event":
        rule = "norm cap"
        cap = dict(args, w_max=jnp.asarray(w_cap))
        traj = simulate(risk, params0, t1, rtol=rtol, event=stop, args=cap, save_params=False)
    status, steps = str(traj.status), int(traj.num_steps)
    params, ts = [traj.final_params], [float(traj.t_final)]
    for fraction in later:
        args["risk_stop"] = fraction * risk0
        traj = simulate(risk, params[-1], t1, t0=ts[-1], rtol=rtol, event=stop, args=args, save_params=False)
        if str(traj.status) != "event":
            break
        params.append(traj.final_params)
        ts.append(float(traj.t_final))
    risks = [float(risk(q, args) / risk0) for q in params]
    return params, ts, risks, rule, status, steps


def initial_stage(X, y, activation, width, seed, rtol=1e-6, t1=1e9, later=(), sigma0=None, a_scale=1.0,
                  equal_norms=False):
    """Gradient flow of R_S for the two-layer net with bias from N(0, σ0²) parameters up to T_stop
    (`_flow_stages`; fallback max_j ‖w_j‖ = 30σ0√(d+1)). σ0 defaults to `init_scale(activation)`;
    `a_scale` multiplies the initial output weights (a ~ N(0, (a_scale·σ0)²)). With
    `equal_norms`, every neuron starts at ‖w_j‖ = σ0 (the Gaussian draw's direction) with
    a_j = ±a_scale·σ0 (its sign): the same directions without the lottery of initial norms.

    Returns a dict with the weights W and a at T_stop, the residual e = f − y there, T_stop,
    the rule that set it ("loss" or "norm cap"), the status, the step count, and, for each
    fraction in `later`, the time ("later_ts"), weights ("later_W") and R_S/R_S(0)
    ("later_risk") where the continued flow first reaches R_S = fraction·R_S(0) (T_stop first).
    """
    import jax
    import jax.numpy as jnp

    from .. import models

    sigma0 = init_scale(activation) if sigma0 is None else sigma0
    params0 = models.init_two_layer_bias(jax.random.PRNGKey(seed), X.shape[1], width, sigma0)
    params0["a"] = a_scale * params0["a"]
    if equal_norms:
        params0 = {"W": sigma0 * params0["W"] / jnp.linalg.norm(params0["W"], axis=1, keepdims=True),
                   "a": a_scale * sigma0 * jnp.sign(params0["a"])}
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y), "activation": jnp.asarray(ACTIVATIONS.index(activation))}
    w_cap = 30 * sigma0 * np.sqrt(X.shape[1] + 1)
    params, ts, risks, rule, status, steps = _flow_stages(_risk, _stop, params0, args, w_cap, rtol, t1, later)
    return {
        "W": np.asarray(params[0]["W"]),
        "a": np.asarray(params[0]["a"]),
        "residual": np.asarray(models.two_layer_bias(params[0], X, activation)) - y,
        "t_stop": ts[0],
        "stop_rule": rule,
        "status": status,
        "num_steps": steps,
        "later_ts": ts,
        "later_risk": risks,
        "later_W": [np.asarray(q["W"]) for q in params],
    }


def adam_stage(X, y, activation, width, seed, lr=5e-4, epochs=(200, 1000), sigma0=5e-3):
    """A cross-check, NOT gradient flow: full-batch optax Adam, the paper's optimiser, on R_S
    from N(0, σ0²) parameters with the paper's Figs. 5–6 settings (σ0 = 0.005, learning rate
    5e−4, one step per epoch). Returns one dict per stop, shaped like `initial_stage`'s: first
    the §D loss rule (the first epoch with R_S ≤ 0.99·R_S(0), at most max(epochs)), then each
    epoch count in `epochs` (increasing); W, a, "t_stop" = the epoch, "stop_rule", R_S/R_S(0)
    ("risk") and "residual" = the residual e = f − y at INITIALISATION, the e of the
    initial-stage theory (Adam leaves the initial stage long before epoch 200: for tanh the
    linear part is fitted by then and −Σ e_i x̃_i of the current residual is ≈ 0)."""
    import jax
    import jax.numpy as jnp
    import optax

    from .. import models

    params = models.init_two_layer_bias(jax.random.PRNGKey(seed), X.shape[1], width, sigma0)
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y), "activation": jnp.asarray(ACTIVATIONS.index(activation))}
    optimiser = optax.adam(lr)
    risk0 = _risk(params, args)
    residual0 = np.asarray(models.two_layer_bias(params, X, activation)) - y

    def step(carry):
        params, state, epoch = carry
        updates, state = optimiser.update(jax.grad(_risk)(params, args), state)
        return optax.apply_updates(params, updates), state, epoch + 1

    @jax.jit
    def until(carry, last, risk_stop):
        return jax.lax.while_loop(lambda c: (c[2] < last) & (_risk(c[0], args) > risk_stop), step, carry)

    carry, out = (params, optimiser.init(params), jnp.asarray(0)), []
    for rule, last, risk_stop in [("loss", max(epochs), 0.99 * risk0)] + [("epochs", e, -1.0) for e in epochs]:
        carry = until(carry, last, risk_stop)
        params, epoch = carry[0], int(carry[2])
        out.append({"W": np.asarray(params["W"]), "a": np.asarray(params["a"]), "residual": residual0, "t_stop": epoch, "stop_rule": rule,
                    "status": "adam", "num_steps": epoch, "risk": float(_risk(params, args) / risk0)})
    return out


def alignment(result, activation, X):
    """cos(ŵ_j, nearest predicted orientation for the sign of a_j) for every neuron j, with no
    norm cut: the direction statistics of all neurons, not only the active set (nan where the
    theory predicts no orientation, e.g. p = 3 where T_3 has no maximum with T_3 > 0)."""
    from ..condensation import _unit
    U = _unit(result["W"])
    cos = np.full(len(U), np.nan)
    for sign in (1, -1):
        pick = np.where(result["a"] >= 0, 1, -1) == sign
        predicted = zhou2022.predicted_directions(activation, X, result["residual"], a_sign=sign)
        if len(predicted):
            cos[pick] = (U[pick] @ predicted.T).max(axis=1)
    return cos


def _centroid_match(result, count, activation, X):
    """min over counted clusters of max cos(centroid, predicted orientation for the cluster's
    majority sign of a_j), predictions from the residual at T_stop."""
    best = []
    for k, centroid in enumerate(count.centroids):
        sign = np.sign(np.sum(np.sign(result["a"][count.labels == k]))) or 1.0
        predicted = zhou2022.predicted_directions(activation, X, result["residual"], a_sign=sign)
        best.append(float(np.max(predicted @ centroid, initial=-1.0)))
    return min(best) if best else float("nan")




def run_d1(seeds, width, rtol, activations=("tanh", "xtanh", "x2tanh"), *, experiment="D1", sigma0=None,
           equal_norms=False):
    """D1 on the data of Fig. 5 (`initial_stage` with `sigma0`, `equal_norms`); returns (verdicts,
    per-run records, weights for heat maps, (norm ratio, alignment) of all neurons per activation
    for the direction figure). Rows per activation: K_line = p, K ≤ 2p (the headline of D1; not
    applicable where nothing condensed), centroids on the predicted directions."""
    from .. import condensation as cond

    X, y = fig5_data()
    verdicts, records, maps, directions = [], [], {}, {}
    for act in activations:
        p = zhou2022.multiplicity(act)
        counts, matches = [], []
        for seed in seeds:
            r = initial_stage(X, y, act, width, seed, rtol, sigma0=sigma0, equal_norms=equal_norms)
            c = cond.condensation(r["W"])
            cos = alignment(r, act, X)
            counts.append(c)
            matches.append(_centroid_match(r, c, act, X))
            records.append(_record(experiment, act, seed, r, c, cos))
            maps.setdefault(act, r["W"])
            norms = np.linalg.norm(r["W"], axis=1)
            ratio, aligned = directions.get(act, ((), ()))
            directions[act] = (np.concatenate([ratio, norms / norms.max()]), np.concatenate([aligned, cos]))
        verdicts += _d1_rows(experiment, act, p, counts, matches, f"{act}, {_seeds(len(seeds))}")
    return verdicts, records, maps, directions


def _seeds(count):
    return f"{count} seed" + ("s" if count != 1 else "")


def _d1_rows(experiment, act, p, counts, matches, label):
    return [
        zhou2022.line_count_verdict(experiment, label, [c.num_lines for c in counts], p),
        zhou2022.two_p_verdict(experiment, label, [c.num_orientations for c in counts], p, headline=experiment == "D1"),
        zhou2022.centroid_verdict(experiment, label, matches),
    ]


def run_d1_adam(seeds, width, activations=("tanh", "xtanh", "x2tanh"), epochs=(200, 1000)):
    """D1 again with full-batch Adam (`adam_stage`, the paper's optimiser and settings) instead of
    gradient flow: a labelled cross-check of whether Adam gives the 2p orientations that the
    gradient flow does not, with D1's rows at the §D loss rule and at each epoch count
    (centroids against the initial-stage directions, from the residual at initialisation).
    Returns (verdicts, records)."""
    from .. import condensation as cond

    X, y = fig5_data()
    verdicts, records = [], []
    for act in activations:
        p = zhou2022.multiplicity(act)
        runs = {seed: adam_stage(X, y, act, width, seed, epochs=epochs) for seed in seeds}
        for k in range(len(epochs) + 1):
            counts, matches, stops, risks = [], [], [], []
            for seed, stages in runs.items():
                r = stages[k]
                c = cond.condensation(r["W"])
                counts.append(c)
                matches.append(_centroid_match(r, c, act, X))
                stops.append(r["t_stop"])
                risks.append(r["risk"])
                records.append(_record("D1-Adam", act, seed, r, c, alignment(r, act, X), risk=r["risk"]))
            at = "R_S ≤ 0.99 R_S(0) at epoch" if k == 0 else "epoch"
            span = f"{min(stops)}" if min(stops) == max(stops) else f"{min(stops)}–{max(stops)}"
            label = (f"{act}, Adam lr 5e−4, {_seeds(len(runs))}, {at} {span}, "
                     f"R_S/R_S(0) {min(risks):.3f}–{max(risks):.3f}")
            verdicts += _d1_rows("D1-Adam", act, p, counts, matches, label)
    return verdicts, records


def run_d1_init(seeds, width, rtol, activations=("xtanh", "x2tanh"), inits=((2e-4, 1.0), (1e-3, 1.0), (5e-3, 1.0), (1e-3, 10.0), (1e-3, 0.1))):
    """Is p ≥ 2 winner-take-all an artefact of the initialisation? D1 with σ0 over a 25-fold range
    (5e−3 is the paper's) and with a scaled by 10 and 0.1 against w: records only (active set,
    K, median cos of all neurons to the predicted orientations, median ‖w_j‖/max), no verdict."""
    from .. import condensation as cond

    X, y = fig5_data()
    records = []
    for act in activations:
        for sigma0, a_scale in inits:
            rows = []
            for seed in seeds:
                r = initial_stage(X, y, act, width, seed, rtol, sigma0=sigma0, a_scale=a_scale)
                c = cond.condensation(r["W"])
                norms = np.linalg.norm(r["W"], axis=1)
                rows.append({"seed": seed, "t_stop": r["t_stop"], "stop_rule": r["stop_rule"], "active": c.num_active, "K": c.num_orientations,
                             "median_cos_all": float(np.nanmedian(alignment(r, act, X))), "median_norm_ratio": float(np.median(norms / norms.max()))})
            records.append({"experiment": "D1-init", "activation": act, "sigma0": sigma0, "a_scale": a_scale, "runs": rows})
    return records


def run_d2(seeds, width, rtol, activations=("tanh", "sigmoid", "softplus", "xtanh", "x2tanh", "relu"), n=80, d=5):
    """D2 on the data of Fig. 2 (one dataset per seed; n points in d dimensions, the paper's
    80 and 5 by default); returns (verdicts, records, heat maps). ReLU (no multiplicity) is
    recorded only."""
    from .. import condensation as cond

    verdicts, records, maps = [], [], {}
    for act in activations:
        runs = []
        for seed in seeds:
            X, y = fig2_data(seed, n, d)
            r = initial_stage(X, y, act, width, seed, rtol)
            c = cond.condensation(r["W"])
            extra = {}
            if act == "x2tanh":
                extra["kkt_orientations"] = 2 * len(zhou2022.maxima_p3(X, r["residual"]))
            runs.append((c, extra))
            cos = alignment(r, act, X) if act in zhou2022.MULTIPLICITY else None
            records.append(_record("D2", act, seed, r, c, cos, **extra))
            maps.setdefault(act, r["W"])
        K = [c.num_orientations for c, _ in runs]
        label = f"{act}, d = {d}, {_seeds(len(seeds))}"
        if act in P1:
            verdicts.append(zhou2022.one_line_verdict("D2", label, [c.num_lines for c, _ in runs], [c.quality for c, _ in runs]))
            if act == "tanh":
                verdicts.append(zhou2022.exact_count_verdict("D2", label, K, {2}, "tanh (σ(0) = 0, odd): the line ±ĝ "
                                                             "holds two orientations (science_B D2)"))
        elif act == "xtanh":
            verdicts.append(zhou2022.exact_count_verdict("D2", label, K, {3, 4}, "x·tanh x (p = 2): 3 or 4 orientations "
                                                         "on d = 5 (science_B D2)"))
        elif act == "x2tanh":
            verdicts.append(zhou2022.two_p_verdict("D2", label, K, 3))
            verdicts.append(zhou2022.kkt_verdict("D2", label, K, [e["kkt_orientations"] for _, e in runs]))
    return verdicts, records, maps


def run_d3(seed, width, rtol, activations=("tanh", "xtanh", "x2tanh"), later=(0.9, 0.7, 0.5, 0.3), *, sigma0=None,
           equal_norms=False):
    """D3: K(t) where the loss has fallen to fractions `later` of R_S(0), on the Fig. 5 data;
    K must not fall below K(T_stop) (not applicable where K(T_stop) = 0)."""
    from .. import condensation as cond

    X, y = fig5_data()
    verdicts, curves = [], {}
    init = ", equal norms" if equal_norms else ""
    for act in activations:
        r = initial_stage(X, y, act, width, seed, rtol, later=later, sigma0=sigma0, equal_norms=equal_norms)
        K = [cond.condensation(W).num_orientations for W in r["later_W"]]
        curves[act + init] = {"t_over_t_stop": list(np.asarray(r["later_ts"]) / r["t_stop"]), "K": K, "risk": list(r["later_risk"])}
        stops = ", ".join(f"{q:.2f}" for q in r["later_risk"])
        verdicts.append(zhou2022.persistence_verdict("D3", f"{act}{init}, seed {seed}, R_S/R_S(0) = {stops}", K))
    return verdicts, curves


RESIDUAL_ACTIVATIONS = ("x2tanh", "xtanh", "sigmoid", "tanh", "softplus")


def fig3_data(seed, n=80, d=3):
    """d = 3, f*(x) = Σ_k 4·sin(12x_k + 1), n = 80 (Zhou et al., Fig. 3). The input law is not
    given in science_B; x_k ~ U[−4, 2] as for Fig. 2 is our assumption."""
    X = np.random.default_rng(seed).uniform(-4.0, 2.0, (n, d))
    return X, (4.0 * np.sin(12 * X + 1)).sum(axis=1)


def _residual_risk(params, args):
    """R_S of the residual net of Zhou et al., Fig. 3 (`gflow.models.residual`)."""
    from .. import models

    return 0.5 * ((models.residual(params, args["X"], RESIDUAL_ACTIVATIONS) - args["y"]) ** 2).mean()


def _residual_stop(params, args):
    """R_S ≤ risk_stop, or the largest row norm of any layer ≥ w_max (the fallback)."""
    import jax.numpy as jnp

    norms = [jnp.linalg.norm(W, axis=1).max() for W in [params["W"], *params["layers"]]]
    return (_residual_risk(params, args) <= args["risk_stop"]) | (jnp.max(jnp.stack(norms)) >= args["w_max"])


def residual_stage(seed, width=18, sigma0=0.01, rtol=1e-6, t1=1e9, later=()):
    """Gradient flow of the Fig. 3 residual net (5 residual layers, width 18, all parameters
    N(0, σ0²)) up to T_stop (`_flow_stages`; fallback: a row norm of 30σ0√(width+1)) and on to
    the fractions `later` of R_S(0). Returns the residual layers' weights at each stop
    ("layers": one list per stop), the times, R_S/R_S(0) there, the rule, status and steps."""
    import jax
    import jax.numpy as jnp

    from .. import models

    X, y = fig3_data(seed)
    params0 = models.init_residual(jax.random.PRNGKey(seed), X.shape[1], width, len(RESIDUAL_ACTIVATIONS), sigma0)
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    w_cap = 30 * sigma0 * np.sqrt(width + 1)
    params, ts, risks, rule, status, steps = _flow_stages(_residual_risk, _residual_stop, params0, args, w_cap, rtol, t1, later)
    return {
        "layers": [[np.asarray(W) for W in q["layers"]] for q in params],
        "ts": ts,
        "risk": risks,
        "stop_rule": rule,
        "status": status,
        "num_steps": steps,
    }


def run_d4(seeds, rtol, later=(0.9, 0.5)):
    """D4 (Zhou et al., Fig. 3): lines per residual layer at T_stop, against the paper's by-eye
    counts 3, 2, 1, 1, 1 (= the multiplicities of x²tanh, x·tanh, sigmoid, tanh, softplus), and
    K ≤ 2p (not applicable where nothing condensed); the records hold the counts where the
    continued flow reaches the fractions `later` of R_S(0)."""
    from .. import condensation as cond

    runs = [residual_stage(seed, rtol=rtol, later=later) for seed in seeds]
    # counts[run][stop][layer]
    counts = [[[cond.condensation(W) for W in layers] for layers in r["layers"]] for r in runs]
    verdicts = []
    for layer, act in enumerate(RESIDUAL_ACTIVATIONS):
        p = zhou2022.multiplicity(act)
        label = f"residual layer {layer + 1} ({act}), {_seeds(len(seeds))}"
        verdicts += [
            zhou2022.line_count_verdict("D4", label, [c[0][layer].num_lines for c in counts], p),
            zhou2022.two_p_verdict("D4", label, [c[0][layer].num_orientations for c in counts], p),
        ]
    records = [
        {
            "experiment": "D4", "seed": seed, "ts": r["ts"], "risk": r["risk"], "stop_rule": r["stop_rule"], "status": r["status"], "num_steps": r["num_steps"],
            # Per stop (T_stop, then each later fraction reached), per layer.
            "K": [[x.num_orientations for x in stop] for stop in c],
            "K_line": [[x.num_lines for x in stop] for stop in c],
            "active": [[x.num_active for x in stop] for stop in c],
            "K_all": [[cond.condensation(W, norm_cut=0.0).num_orientations for W in layers] for layers in r["layers"]],
        }
        for seed, r, c in zip(seeds, runs, counts)
    ]
    maps = {f"layer {k + 1} ({act})": W for k, (act, W) in enumerate(zip(RESIDUAL_ACTIVATIONS, runs[0]["layers"][0]))}
    return verdicts, records, maps


def _record(experiment, activation, seed, r, c, cos=None, **extra):
    from .. import condensation as cond

    norms = np.linalg.norm(r["W"], axis=1)
    everyone = cond.condensation(r["W"], norm_cut=0.0)
    record = {
        "experiment": experiment,
        "activation": activation,
        "seed": seed,
        "t_stop": r["t_stop"],
        "stop_rule": r["stop_rule"],
        "status": r["status"],
        "num_steps": r["num_steps"],
        "K": c.num_orientations,
        "K_line": c.num_lines,
        "q": c.quality,
        "active": c.num_active,
        "robust_K": _robust_counts(r["W"]),
        # All neurons (norm cut 0): the directions whatever their norms.
        "K_all": everyone.num_orientations,
        "K_line_all": everyone.num_lines,
        "q_all": everyone.quality,
        "norm_ratio_quantiles_50_90_99": np.quantile(norms / norms.max(), [0.5, 0.9, 0.99]).round(5).tolist(),
        **extra,
    }
    if cos is not None:
        record["cos_predicted_quantiles_10_50_90"] = np.nanquantile(cos, [0.1, 0.5, 0.9]).round(4).tolist()
        record["share_cos_predicted_ge_0.99"] = float(np.mean(cos >= 0.99))
    return record


def _robust_counts(W):
    # K over the robustness grid (rows: cos thresholds, columns: norm cuts).
    from .. import condensation as cond

    return cond.robustness(W)["num_orientations"].tolist()




def _plot_maps(maps, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import condensation as cond

    fig, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2), squeeze=False)
    for ax, (act, W) in zip(axes[0], maps.items()):
        image = cond.plot_heatmap(W, ax, title=f"{act}: K={cond.condensation(W).num_orientations}")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=r"$\cos(w_j, w_k)$")
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _plot_directions(directions, path):
    """All neurons at T_stop (all seeds): norm relative to the largest against the cosine to the
    nearest predicted orientation; the dashed line is the active-set cut 0.2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(directions), figsize=(3.3 * len(directions), 3.2), squeeze=False)
    for ax, (act, (ratio, cos)) in zip(axes[0], directions.items()):
        ax.semilogx(ratio, cos, ".", ms=3, alpha=0.5)
        ax.axvline(0.2, color="k", ls="--", lw=0.8, label="active-set cut 0.2")
        ax.set(xlabel=r"$\|w_j\| / \max_k \|w_k\|$", ylim=(-1.05, 1.05), title=act)
    axes[0][0].set_ylabel(r"$\cos(\hat w_j$, predicted orientation$)$")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("D1 at T_stop: direction of every neuron (no norm cut)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_d3(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for act, c in curves.items():
        ax.plot(c["risk"], c["K"], "o-", label=act)
    ax.set(xlabel=r"$R_S(t) / R_S(0)$", ylabel=r"$K(t)$", title="D3: orientation count as the loss falls")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PARTS = ("D1", "D1-equal", "D2", "D3", "D4", "D1-init", "D1-Adam")


def run(out: Path, quick=False, rtol=1e-6, parts=PARTS) -> list:
    """The experiments of `parts` (names of `PARTS`: D1–D4, D1 with equal initial norms, D1-init and
    the D1-Adam cross-check; default all); writes the verdicts, summary and manifest
    (`verdicts_io.write`) and the figures into `out`, returns the Verdicts. Quick mode: 2 seeds,
    fewer activations and a narrower net, no D4 and no D1-init, D1-Adam for x²·tanh only, D1 with
    equal norms for x·tanh only, and D2's target on 40 points in d = 1 (the shapes of D1), so that
    one compiled solve serves the whole run."""
    start = time.perf_counter()
    out = Path(out)
    seeds = range(2) if quick else range(10)
    empty = ([], [], {}, {})
    steps = {
        "D1": lambda: run_d1(seeds, 50 if quick else 100, rtol),
        "D1-equal": lambda: run_d1(range(2) if quick else range(5), 100 if quick else 400, rtol,
                                   ("xtanh",) if quick else ("xtanh", "x2tanh"), experiment="D1-equal", sigma0=5e-3,
                                   equal_norms=True),
        "D2": lambda: (run_d2(range(1), 50, rtol, activations=("tanh",), n=40, d=1) if quick
                       else run_d2(range(5), 50, rtol)),
        "D3": lambda: run_d3(0, 50, rtol, activations=("tanh",), later=(0.9, 0.5)) if quick else run_d3(0, 100, rtol),
        "D4": lambda: ([], [], {}) if quick else run_d4(range(3), rtol),
        "D1-init": lambda: [] if quick else run_d1_init(range(3), 100, rtol),
        "D1-Adam": lambda: run_d1_adam(seeds, 50, activations=("x2tanh",)) if quick else run_d1_adam(seeds, 100),
    }
    got = {name: steps[name]() if name in parts else None for name in PARTS}
    d1, equal, d2, d3, d4 = (got[k] or empty for k in ("D1", "D1-equal", "D2", "D3", "D4"))
    adam = got["D1-Adam"] or ([], [])
    verdicts = d1[0] + equal[0] + d2[0] + d3[0] + d4[0] + adam[0]
    wall = time.perf_counter() - start
    summary = {"quick": quick, "rtol": rtol, "parts": list(parts), "wall_seconds": wall,
               "runs": d1[1] + equal[1] + (got["D1-init"] or []) + d2[1] + d4[1] + adam[1], "d3": d3[1]}
    verdicts_io.write(out, verdicts, summary, seeds=seeds, wall_seconds=wall)
    figures = [(d1[2], "heatmaps_D1.png", "D1 (d = 1, Fig. 5 data, Gaussian init): cosine similarity at T_stop"),
               (equal[2], "heatmaps_D1_equal.png", "D1 with equal initial norms (σ0 = 5e−3): cosine similarity at T_stop"),
               (d2[2], "heatmaps_D2.png", "D2 (Fig. 2 target): cosine similarity at T_stop"),
               (d4[2], "heatmaps_D4.png", "D4 (Fig. 3 residual net, seed 0): cosine similarity per layer at T_stop")]
    for maps, name, title in figures:
        if maps:
            _plot_maps(maps, out / name, title)
    directions = d1[3] | {f"{k}, equal norms": v for k, v in equal[3].items()}
    if directions:
        _plot_directions(directions, out / "directions_D1.png")
    if d3[1]:
        _plot_d3(d3[1], out / "counts_D3.png")
    return verdicts


def register(subparsers):
    verdicts_io.register_study(subparsers, "condensation", "Zhou et al. 2022: condensed orientations (D1–D4)", run,
                               "results/condensation", parts=PARTS)
