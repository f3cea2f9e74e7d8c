"""Zhou, Zhou, Luo, Zhang, Xu, "Towards understanding the condensation of neural networks at
initial training" (NeurIPS 2022, arXiv 2105.11686): leading-order condensed directions.

Network f(x) = Σ_j a_j σ(w_j·x̃), x̃ = (x, 1), loss R_S = (1/2n) Σ_i e_i², e_i = f(x_i) − y_i.
σ has multiplicity p: σ^{(k)}(0) = 0 for k = 1…p−1, σ^{(p)}(0) ≠ 0. For small parameters
σ'(z) ≈ σ^{(p)}(0) z^{p−1}/(p−1)!, so the input weights move as

    ẇ_j = −(a_j/n) Σ_i e_i σ'(w_j·x̃_i) x̃_i ∝ a_j ∇_w T_p(w),   T_p(u) = −Σ_i e_i (u·x̃_i)^p,

and their directions climb T_p on the sphere S^d if a_j σ^{(p)}(0) > 0 (descend it otherwise).
At leading order e_i ≈ −y_i (f ≈ 0); with σ(0) ≠ 0 the residual at the stopping time is the
right e. This is the reconstruction of science_B §D [R], consistent with the paper's §5:

- p = 1: T_1 is linear, all directions go to ±ĝ with g = −Σ_i e_i x̃_i (proved in the paper);
- p = 2: T_2(u) = uᵀCu, C = −Σ_i e_i x̃_i x̃_iᵀ: a_j > 0 → ± top eigenvector, a_j < 0 → ± bottom;
- p = 3: a_j > 0 → local maxima of T_3 on S^d, a_j < 0 → their negatives (T_3 is odd).

The second part holds the criteria of the `gflow condensation` rows; the third the flows they
are read from: the data of Figs. 2, 3 and 5, the initial stage of science_B §D
(`initial_stage`, `residual_stage`: gradient flow of R_S to T_stop, the first time
R_S ≤ 0.99·R_S(0), `flow_stages`), the Adam cross-check (`adam_stage`) and the cosine of every
neuron to its predicted orientation (`alignment`, `centroid_match`). The last part runs the
experiments D1–D4 of `gflow condensation` (`run_d1`, `run_d1_adam`, `run_d1_init`, `run_d2`,
`run_d3`, `run_d4`): the flows, their counts (`gflow.condensation`), the rows and the per-run
records (`_record`).
"""

import numpy as np

from ..condensation import _unit
from ..models import with_bias
from ..studies.verdicts import check

#: Multiplicity p of the activations of `gflow.models.ACTIVATIONS` (ReLU has none).
MULTIPLICITY = {"tanh": 1, "sigmoid": 1, "softplus": 1, "xtanh": 2, "x2tanh": 3}


def multiplicity(activation):
    """p for an activation name; ValueError for one without a multiplicity (e.g. ReLU)."""
    try:
        return MULTIPLICITY[activation]
    except KeyError:
        raise ValueError(
            f"activation {activation!r} has no multiplicity p: use one of {sorted(MULTIPLICITY)}"
        ) from None


def _features_and_weights(X, residual):
    Xt = np.asarray(with_bias(np.asarray(X, dtype=float)))
    weights = -np.asarray(residual, dtype=float)
    if weights.shape != (Xt.shape[0],):
        raise ValueError(f"residual has shape {weights.shape}, need ({Xt.shape[0]},) for X")
    return Xt, weights


def direction_p1(X, residual):
    """ĝ, g = −Σ_i e_i x̃_i: the one line of a p = 1 activation (Zhou et al., Thm. for p = 1).
    Pass `residual = −y` for the small-initialisation limit."""
    Xt, c = _features_and_weights(X, residual)
    return _unit(c @ Xt)


def directions_p2(X, residual):
    """(top, bottom) unit eigenvectors of C = −Σ_i e_i x̃_i x̃_iᵀ: the lines of p = 2 for
    a_j > 0 and a_j < 0 respectively."""
    Xt, c = _features_and_weights(X, residual)
    _, vecs = np.linalg.eigh((Xt * c[:, None]).T @ Xt)
    return vecs[:, -1], vecs[:, 0]


def cubic_form(X, residual):
    """T_3(u) = −Σ_i e_i (u·x̃_i)³ as a function returning (T, ∇T) and, with `hessian=True`,
    also ∇²T, in R^{d+1}; u of shape (…, d+1)."""
    Xt, c = _features_and_weights(X, residual)

    def T(u, hessian=False):
        z = u @ Xt.T
        out = ((c * z**3).sum(-1), 3 * (c * z**2) @ Xt)
        if hessian:
            out += (6 * np.einsum("i,...i,ij,ik->...jk", c, z, Xt, Xt),)
        return out

    return T


def maxima_p3(X, residual, num_starts=200, steps=2000, seed=0):
    """Local maxima of T_3 on the sphere S^d with T_3 > 0: the orientations that p = 3 neurons
    with a_j > 0 condense on (their negatives for a_j < 0; where T_3 ≤ 0 neither w_j nor a_j
    grows). Found by Riemannian gradient ascent from `num_starts` random starts, deduplicated,
    polished by Riemannian Newton steps, and kept only where the Riemannian Hessian
    P∇²T P − (u·∇T)P is negative definite on the tangent space (strict local maxima: the KKT
    count). Returns (k, d+1) unit vectors, largest T_3 first."""
    T = cubic_form(X, residual)
    rng = np.random.default_rng(seed)
    u = _unit(rng.standard_normal((num_starts, np.asarray(X).shape[-1] + 1)))
    scale = np.abs(T(u)[1]).max()
    for _ in range(steps):
        grad = T(u)[1]
        tangent = grad - (grad * u).sum(-1, keepdims=True) * u
        if np.abs(tangent).max() < 1e-6 * scale:
            break
        u = _unit(u + 0.2 * tangent / scale)
    maxima, seen = [], np.zeros((0, u.shape[1]))
    for k in np.argsort(-T(u)[0]):
        if np.any(seen @ u[k] > 0.999):
            continue
        seen = np.vstack([seen, u[k]])
        v, ok = _polish_maximum(T, u[k], scale)
        if ok and not any(v @ m > 0.999999 for m in maxima):
            maxima.append(v)
    return np.array(maxima).reshape(-1, u.shape[1])


def _polish_maximum(T, u, scale, iterations=30):
    # Riemannian Newton on the sphere; a strict local maximum with T > 0 passes the checks.
    eye = np.eye(u.shape[0])
    for _ in range(iterations):
        value, grad, hess = T(u, hessian=True)
        P = eye - np.outer(u, u)
        riemann = P @ hess @ P - (u @ grad) * P
        tangent = P @ grad
        u = _unit(u - P @ np.linalg.lstsq(riemann, tangent, rcond=None)[0])
    value, grad, hess = T(u, hessian=True)
    P = eye - np.outer(u, u)
    eig = np.linalg.eigvalsh(P @ hess @ P - (u @ grad) * P)
    # The largest eigenvalue, 0, belongs to the normal direction u itself.
    stationary = np.linalg.norm(P @ grad) <= 1e-9 * scale
    return u, bool(stationary and eig[-2] < 0 and value > 0)


def predicted_directions(activation, X, residual, a_sign=None):
    """Unit vectors (rows) of the predicted condensed orientations for an activation of
    multiplicity 1, 2 or 3; with `a_sign` (+1 or −1) only those for output weights of that sign
    (orientations, so antipodes count separately: p = 1 gives ±ĝ). Shape (k, d+1); k = 0 for
    p = 3 where T_3 has no local maximum with T_3 > 0."""
    p = multiplicity(activation)
    if p == 1:
        g = direction_p1(X, residual)
        return np.stack([g, -g])
    if p == 2:
        top, bottom = directions_p2(X, residual)
        pairs = {1: [top, -top], -1: [bottom, -bottom]}
    else:
        m = maxima_p3(X, residual)
        pairs = {1: list(m), -1: list(-m)}
    keep = (1, -1) if a_sign is None else (int(np.sign(a_sign)),)
    return np.array([v for s in keep for v in pairs[s]]).reshape(-1, np.shape(X)[-1] + 1)


# ----------------------------------------------------------------------------- verdict criteria
# The rows of `gflow condensation` as pure functions of per-seed counts (K: orientations, K_line:
# lines, from `gflow.condensation.condensation`), so that tests can feed them wrong inputs. A
# count bound holds vacuously when nothing condensed (K = 0): such a row is not applicable.
CITE = "Zhou et al. 2022"


def _ints(values):
    return [int(v) for v in np.asarray(values).ravel()]


def _uncondensed(K):
    zero = [k for k, v in enumerate(_ints(K)) if v < 1]
    return f"nothing condensed (K = 0) in {len(zero)} of {len(_ints(K))} runs (indices {zero}): the bound holds vacuously"


def count_bound_verdict(experiment, label, K, bound, *, bound_name, claim, basis, headline=False):
    """K ≤ bound in every run (`bound` a number or one per run), tested only when every run
    condensed (K ≥ 1); not applicable otherwise."""
    K = _ints(K)
    bounds = np.broadcast_to(np.asarray(bound), (len(K),))
    return check(experiment, claim, f"{label}: K per run", str(K), f"K ≤ {bound_name} in every run",
                 bool(np.all(np.asarray(K) <= bounds)), basis=basis, premise=len(K) > 0 and min(K) >= 1,
                 premise_reason=_uncondensed(K), headline=headline)


def two_p_verdict(experiment, label, K, p, headline=False):
    """[paper] "the maximum number of condensed orientations in the initial stage is 2p"
    (a conjecture, proved for p = 1 and for d = 1): K ≤ 2p in every run that condensed."""
    return count_bound_verdict(experiment, label, K, 2 * p, bound_name=f"2p = {2 * p}", basis="paper",
                               claim=f"\"the maximum number of condensed orientations in the initial stage is twice "
                               f"the multiplicity of the activation\" ({CITE}, §1)", headline=headline)


def kkt_verdict(experiment, label, K, kkt):
    """[derivation] K ≤ the KKT count, 2 × the strict local maxima of T_3 on S^d (`maxima_p3`),
    in every run that condensed."""
    return count_bound_verdict(experiment, label, K, kkt, bound_name=f"KKT count {_ints(kkt)}", basis="derivation",
                               claim="p = 3 neurons condense on the local maxima of T_3(u) = −Σ e_i (u·x̃_i)³ "
                               "or their negatives (leading-order theory, science_B §D [R])")


def line_count_verdict(experiment, label, lines, p, share=0.8):
    """[pilot] K_line = p in at least `share` of the runs (science_B D1: ≥ 8/10 seeds). A run
    where nothing condensed has K_line = 0 ≠ p and counts against the claim."""
    lines = _ints(lines)
    got = float(np.mean(np.asarray(lines) == p)) if lines else np.nan
    return check(experiment, f"p = {p}: the condensed orientations lie on p lines ({CITE}, Figs. 2, 5; science_B D1)",
                 f"{label}: share of runs with K_line = {p} (K_line per run {lines})", got, f"≥ {share:.0%}",
                 bool(lines) and got >= share, basis="pilot", premise=bool(lines), premise_reason="no runs")


def centroid_verdict(experiment, label, matches, threshold=0.98):
    """[derivation] the counted clusters sit on the leading-order directions
    (`predicted_directions`): min over runs of the worst cluster's cos to its nearest prediction
    ≥ threshold. Not applicable when a run has no counted cluster (NaN)."""
    m = np.asarray(matches, float)
    premise = m.size > 0 and bool(np.all(np.isfinite(m)))
    measured = float(np.min(m)) if premise else None
    return check(experiment, "condensed orientations are the leading-order directions: ±ĝ (p = 1), eigenvectors of C "
                 "(p = 2), maxima of T_3 (p = 3) (science_B §D [R])", f"{label}: min cos(centroid, predicted)",
                 measured, f"≥ {threshold}", premise and measured >= threshold, basis="derivation", premise=premise,
                 premise_reason=f"no counted cluster in {int(np.sum(~np.isfinite(m)))} of {m.size} runs")


def persistence_verdict(experiment, label, K):
    """[pilot] after T_stop the count does not fall as the loss falls (science_B D3): K at each
    later stop ≥ K(T_stop). Not applicable when nothing had condensed at T_stop."""
    K = _ints(K)
    return check(experiment, "condensation persists: after the initial stage K(t) does not decrease as the loss "
                 "falls (science_B D3, qualitative)", f"{label}: K at T_stop, then at the later stops", str(K),
                 "K(t) ≥ K(T_stop) at every later stop", len(K) > 0 and min(K) >= K[0], basis="pilot",
                 premise=len(K) > 0 and K[0] >= 1, premise_reason="nothing condensed at T_stop (K = 0)")


def one_line_verdict(experiment, label, lines, quality, min_quality=0.9):
    """[paper] p = 1 (proved, any d): every input weight tends to ±ĝ, one line: K_line = 1 and
    quality q ≥ `min_quality` in every run (K_line = 0, nothing condensed, fails)."""
    lines = _ints(lines)
    q = float(np.min(quality)) if len(lines) else np.nan
    return check(experiment, f"p = 1: all input weights condense on one line ±ĝ ({CITE}, Thm. for p = 1)",
                 f"{label}: K_line per run {lines}, min quality q", q, f"K_line = 1 and q ≥ {min_quality} in every run",
                 bool(lines) and set(lines) == {1} and q >= min_quality, basis="paper", premise=bool(lines),
                 premise_reason="no runs")


def exact_count_verdict(experiment, label, K, allowed, claim):
    """[pilot] K in the set `allowed` in every run (science_B D2; K = 0 fails)."""
    K = _ints(K)
    return check(experiment, claim, f"{label}: K per run", str(K), f"K ∈ {sorted(allowed)} in every run",
                 bool(K) and set(K) <= set(allowed), basis="pilot", premise=bool(K), premise_reason="no runs")


# ----------------------------------------------------------------------------- the flows of §D: data, the initial stage (gradient flow and the Adam cross-check), alignment
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


def two_layer_risk(params, args):
    """R_S = (1/2n) Σ_i (f(x_i) − y_i)², f = Σ_j a_j σ(w_j·x̃) (Zhou et al., eq. 2)."""
    from .. import models

    f = _sigma(args["activation"], models.with_bias(args["X"]) @ params["W"].T) @ params["a"]
    return 0.5 * ((f - args["y"]) ** 2).mean()


def two_layer_stop(params, args):
    """R_S ≤ risk_stop, or max_j ‖w_j‖ ≥ w_max (∞ unless the fallback is in use)."""
    import jax.numpy as jnp

    big = jnp.linalg.norm(params["W"], axis=1).max() >= args["w_max"]
    return (two_layer_risk(params, args) <= args["risk_stop"]) | big


def flow_stages(risk, stop, params0, args, w_cap, rtol, t1, later):
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
    (`flow_stages`; fallback max_j ‖w_j‖ = 30σ0√(d+1)). σ0 defaults to `init_scale(activation)`;
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
    params, ts, risks, rule, status, steps = flow_stages(two_layer_risk, two_layer_stop, params0, args, w_cap, rtol, t1, later)
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
    risk0 = two_layer_risk(params, args)
    residual0 = np.asarray(models.two_layer_bias(params, X, activation)) - y

    def step(carry):
        params, state, epoch = carry
        updates, state = optimiser.update(jax.grad(two_layer_risk)(params, args), state)
        return optax.apply_updates(params, updates), state, epoch + 1

    @jax.jit
    def until(carry, last, risk_stop):
        return jax.lax.while_loop(lambda c: (c[2] < last) & (two_layer_risk(c[0], args) > risk_stop), step, carry)

    carry, out = (params, optimiser.init(params), jnp.asarray(0)), []
    for rule, last, risk_stop in [("loss", max(epochs), 0.99 * risk0)] + [("epochs", e, -1.0) for e in epochs]:
        carry = until(carry, last, risk_stop)
        params, epoch = carry[0], int(carry[2])
        out.append({"W": np.asarray(params["W"]), "a": np.asarray(params["a"]), "residual": residual0, "t_stop": epoch, "stop_rule": rule,
                    "status": "adam", "num_steps": epoch, "risk": float(two_layer_risk(params, args) / risk0)})
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
        predicted = predicted_directions(activation, X, result["residual"], a_sign=sign)
        if len(predicted):
            cos[pick] = (U[pick] @ predicted.T).max(axis=1)
    return cos


def centroid_match(result, count, activation, X):
    """min over counted clusters of max cos(centroid, predicted orientation for the cluster's
    majority sign of a_j), predictions from the residual at T_stop."""
    best = []
    for k, centroid in enumerate(count.centroids):
        sign = np.sign(np.sum(np.sign(result["a"][count.labels == k]))) or 1.0
        predicted = predicted_directions(activation, X, result["residual"], a_sign=sign)
        best.append(float(np.max(predicted @ centroid, initial=-1.0)))
    return min(best) if best else float("nan")


RESIDUAL_ACTIVATIONS = ("x2tanh", "xtanh", "sigmoid", "tanh", "softplus")


def fig3_data(seed, n=80, d=3):
    """d = 3, f*(x) = Σ_k 4·sin(12x_k + 1), n = 80 (Zhou et al., Fig. 3). The input law is not
    given in science_B; x_k ~ U[−4, 2] as for Fig. 2 is our assumption."""
    X = np.random.default_rng(seed).uniform(-4.0, 2.0, (n, d))
    return X, (4.0 * np.sin(12 * X + 1)).sum(axis=1)


def residual_risk(params, args):
    """R_S of the residual net of Zhou et al., Fig. 3 (`gflow.models.residual`)."""
    from .. import models

    return 0.5 * ((models.residual(params, args["X"], RESIDUAL_ACTIVATIONS) - args["y"]) ** 2).mean()


def residual_stop(params, args):
    """R_S ≤ risk_stop, or the largest row norm of any layer ≥ w_max (the fallback)."""
    import jax.numpy as jnp

    norms = [jnp.linalg.norm(W, axis=1).max() for W in [params["W"], *params["layers"]]]
    return (residual_risk(params, args) <= args["risk_stop"]) | (jnp.max(jnp.stack(norms)) >= args["w_max"])


def residual_stage(seed, width=18, sigma0=0.01, rtol=1e-6, t1=1e9, later=()):
    """Gradient flow of the Fig. 3 residual net (5 residual layers, width 18, all parameters
    N(0, σ0²)) up to T_stop (`flow_stages`; fallback: a row norm of 30σ0√(width+1)) and on to
    the fractions `later` of R_S(0). Returns the residual layers' weights at each stop
    ("layers": one list per stop), the times, R_S/R_S(0) there, the rule, status and steps."""
    import jax
    import jax.numpy as jnp

    from .. import models

    X, y = fig3_data(seed)
    params0 = models.init_residual(jax.random.PRNGKey(seed), X.shape[1], width, len(RESIDUAL_ACTIVATIONS), sigma0)
    args = {"X": jnp.asarray(X), "y": jnp.asarray(y)}
    w_cap = 30 * sigma0 * np.sqrt(width + 1)
    params, ts, risks, rule, status, steps = flow_stages(residual_risk, residual_stop, params0, args, w_cap, rtol, t1, later)
    return {
        "layers": [[np.asarray(W) for W in q["layers"]] for q in params],
        "ts": ts,
        "risk": risks,
        "stop_rule": rule,
        "status": status,
        "num_steps": steps,
    }


# ----------------------------------------------------------------------------- the experiments D1–D4 (flows, counts, rows)
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
        p = multiplicity(act)
        counts, matches = [], []
        for seed in seeds:
            r = initial_stage(X, y, act, width, seed, rtol, sigma0=sigma0, equal_norms=equal_norms)
            c = cond.condensation(r["W"])
            cos = alignment(r, act, X)
            counts.append(c)
            matches.append(centroid_match(r, c, act, X))
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
        line_count_verdict(experiment, label, [c.num_lines for c in counts], p),
        two_p_verdict(experiment, label, [c.num_orientations for c in counts], p, headline=experiment == "D1"),
        centroid_verdict(experiment, label, matches),
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
        p = multiplicity(act)
        runs = {seed: adam_stage(X, y, act, width, seed, epochs=epochs) for seed in seeds}
        for k in range(len(epochs) + 1):
            counts, matches, stops, risks = [], [], [], []
            for seed, stages in runs.items():
                r = stages[k]
                c = cond.condensation(r["W"])
                counts.append(c)
                matches.append(centroid_match(r, c, act, X))
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
                extra["kkt_orientations"] = 2 * len(maxima_p3(X, r["residual"]))
            runs.append((c, extra))
            cos = alignment(r, act, X) if act in MULTIPLICITY else None
            records.append(_record("D2", act, seed, r, c, cos, **extra))
            maps.setdefault(act, r["W"])
        K = [c.num_orientations for c, _ in runs]
        label = f"{act}, d = {d}, {_seeds(len(seeds))}"
        if act in P1:
            verdicts.append(one_line_verdict("D2", label, [c.num_lines for c, _ in runs], [c.quality for c, _ in runs]))
            if act == "tanh":
                verdicts.append(exact_count_verdict("D2", label, K, {2}, "tanh (σ(0) = 0, odd): the line ±ĝ "
                                                             "holds two orientations (science_B D2)"))
        elif act == "xtanh":
            verdicts.append(exact_count_verdict("D2", label, K, {3, 4}, "x·tanh x (p = 2): 3 or 4 orientations "
                                                         "on d = 5 (science_B D2)"))
        elif act == "x2tanh":
            verdicts.append(two_p_verdict("D2", label, K, 3))
            verdicts.append(kkt_verdict("D2", label, K, [e["kkt_orientations"] for _, e in runs]))
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
        verdicts.append(persistence_verdict("D3", f"{act}{init}, seed {seed}, R_S/R_S(0) = {stops}", K))
    return verdicts, curves


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
        p = multiplicity(act)
        label = f"residual layer {layer + 1} ({act}), {_seeds(len(seeds))}"
        verdicts += [
            line_count_verdict("D4", label, [c[0][layer].num_lines for c in counts], p),
            two_p_verdict("D4", label, [c[0][layer].num_orientations for c in counts], p),
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
