"""An independent, sliding-aware, event-driven reference for ReLU gradient flows (issue 17).

Pure numpy/scipy; it shares no code with `gflow` (it takes plain arrays X, y, W0, v0), so it can
judge gflow's switching solve.

**The flow.** Two-layer net f(x) = Σ_j v_j σ(w_jᵀx) with σ(z) = z·(a + (1−a)·[z > 0]) (ReLU:
a = 0, leaky ReLU: slope a < 1), objective L(θ) = R Σ_i ℓ(f(x_i), y_i) with R = 1 (sum) or
1/n (mean) and the losses of `gflow.losses`: exponential e^{−yf}, logistic c·log(1 + e^{−yf})
(c = 1), square c·(f − y)² (c = ½). θ = (W, v) flattened, W first (row j = w_j), then v.

**Switching surfaces.** s_k(θ) = w_jᵀx_i, k = i·h + j: *linear* in θ, s = Nθ with the row n_k of
N holding x_i in the w_j block. Freezing the pattern p ∈ [0, 1]^K (σ(z) → z·(a + (1−a)p_k)) gives
a smooth field F(θ, p) = −∇_θ L(θ, p), with hand-written gradient (r_i = R ℓ'(f_i, y_i),
c_ij = a + (1−a)p_ij):

    −∂L/∂v_j = −Σ_i r_i c_ij s_ij,      −∂L/∂w_j = −v_j Σ_i r_i c_ij x_i.

Its jump in p_k, J_k = ∂F/∂p_k = −(1−a) r_i (v_j x_i in the w_j block, s_ij in v_j), is normal to
surface k where s_k = 0 (J_k = β_k n_k, β_k = −(1−a) r_i v_j), and there f does not depend on p_k.

**Filippov's rule (the slow solution of a gradient inclusion).** On the set Z of surfaces at
zero, F(θ, q) = F0 + Σ_{k∈Z} q_k J_k is affine in q = p_Z; the Filippov velocity is the
minimal-norm element of the convex hull of the one-sided fields,
q* = argmin_{q∈[0,1]^Z} ‖F0 + Jᵀq‖ (`scipy.optimize.lsq_linear`, method "bvls"). Surfaces with
0 < q*_k < 1 *slide*: KKT gives n_k·F(q*) = 0. The others leave to the side of their normal
velocity n_k·F(q*) (to the side of their bound when it is zero, as at an exit).

**Sliding.** On a sliding set S the field is F_S(θ) = Π F(θ, p with p_S = 0) with Π the
orthogonal projector onto {n_k : k ∈ S}^⊥ (exactly the Filippov field: the jumps are normal), so
s_S stays zero; since s is linear the state is also re-projected onto the surfaces after each
segment. The Filippov weights along the sliding solution solve (N_S J_Sᵀ) q = −N_S F0.

**Event-driven integration.** Each segment integrates the frozen, projected smooth field with
scipy's DOP853 stepper (the one `solve_ivp(method="DOP853")` drives; "Radau", "LSODA", ... for
cross-checks), and after every step looks for two kinds of events on the step's dense output:
g1_k = σ_k s_k + c_k < 0 for a non-sliding surface (σ_k = ±1 its side: a crossing) and
g2 = min over sliding k of min(q_k, 1 − q_k) < 0 (an exit). They are sampled at 12 points of
the step, vectorised over all n·h surfaces (solve_ivp's scalar events would cost one Python call
per surface and only compare step ends, missing a surface that dips below zero and back within a
step), and the first sign change is located by brentq (per surface) to ~4e-16 in t. At an
event, Z = the sliding set plus every surface with σ_k s_k ≤ τ·‖x_i‖‖w_j‖ (τ = `zero_tol`), and
the rule above decides all onsets, exits and crossings at once (see `_decide` for leavers that
change the problem of the rest). Hysteresis against round-off: a surface just given a side gets
an offset c_k = max(0, −σ_k s_k) + τ/2·‖x_i‖‖w_j‖, so it is not re-detected where it stands; it
fires again only if it really turns back. A surface slides only if τ_q < q*_k < 1 − τ_q.

Limits: a dip narrower than a twelfth of a step is not seen; cost grows with the number of events (each restarts the integrator) and with
D = h(d+1) (dense normals of the sliding set).
"""

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.integrate
import threadpoolctl
from scipy.optimize import brentq, lsq_linear


def _loss_and_derivative(loss, f, y, factor):
    """ℓ(f, y) and ∂ℓ/∂f elementwise, for the losses of `gflow.losses`."""
    if loss == "exponential":
        e = np.exp(-y * f)
        return e, -y * e
    if loss == "logistic":
        z = -y * f
        return factor * np.logaddexp(0.0, z), -factor * y * 0.5 * (1.0 + np.tanh(0.5 * z))
    if loss == "square":
        return factor * (f - y) ** 2, 2.0 * factor * (f - y)
    raise ValueError(f"unknown loss {loss!r}: exponential, logistic or square")


_DEFAULT_FACTOR = {"exponential": 1.0, "logistic": 1.0, "square": 0.5}


class TwoLayerNet:
    """L(θ) of a two-layer net f(x) = Σ_j v_j σ(w_jᵀx) on data (X, y), with its switching surfaces.

    The interface used by `integrate` (any problem with *linear* surfaces s = Nθ and jumps of the
    field normal to them can provide it): `dim`, `num_surfaces`, `field(θ, p)`, `surfaces(θ)`,
    `normals(ks)`, `jumps(θ, ks)`, `surface_scale(θ)`.
    """

    def __init__(self, X, y, loss="exponential", reduction="sum", activation="relu", slope=0.01, factor=None):
        self.X = np.asarray(X, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")
        self.loss_name = loss
        self.factor = _DEFAULT_FACTOR[loss] if factor is None else float(factor)
        self.R = 1.0 if reduction == "sum" else 1.0 / len(self.y)
        self.a = 0.0 if activation == "relu" else float(slope)
        self.xnorm = np.linalg.norm(self.X, axis=1)
        self.width = None

    def bind(self, width):
        """Fix the width h (θ has h(d+1) entries, K = n·h surfaces)."""
        self.width = int(width)
        n, d = self.X.shape
        self.dim = self.width * (d + 1)
        self.num_surfaces = n * self.width
        return self

    # ---- parameters
    def pack(self, W, v):
        return np.concatenate([np.ravel(W), np.ravel(v)]).astype(np.float64)

    def unpack(self, theta):
        h, d = self.width, self.X.shape[1]
        return theta[: h * d].reshape(h, d), theta[h * d :]

    # ---- objective and field
    def _forward(self, theta, slopes):
        W, v = self.unpack(theta)
        S = self.X @ W.T  # (n, h)
        f = (S * slopes) @ v
        return W, v, S, f

    def slopes(self, pattern):
        """c = a + (1 − a)·p, shape (n, h)."""
        return self.a + (1.0 - self.a) * np.reshape(pattern, (len(self.y), self.width))

    def loss(self, theta):
        """L(θ) with the true activation (pattern = [s > 0])."""
        W, v = self.unpack(theta)
        S = self.X @ W.T
        f = (S * self.slopes(S > 0)) @ v
        return self.R * float(np.sum(_loss_and_derivative(self.loss_name, f, self.y, self.factor)[0]))

    def field(self, theta, pattern):
        """F(θ, p) = −∇_θ L(θ, p), the frozen-pattern field (hand-written gradient)."""
        c = self.slopes(pattern)
        W, v, S, f = self._forward(theta, c)
        r = self.R * _loss_and_derivative(self.loss_name, f, self.y, self.factor)[1]
        rc = r[:, None] * c  # (n, h)
        gv = np.einsum("ij,ij->j", rc, S)
        gW = v[:, None] * (rc.T @ self.X)
        return -np.concatenate([gW.ravel(), gv])

    def gradient(self, theta):
        """∇L(θ) off the surfaces (the pattern of θ's own signs)."""
        return -self.field(theta, self.surfaces(theta) > 0)

    # ---- surfaces
    def surfaces(self, theta):
        """s_k = w_jᵀx_i, k = i·h + j."""
        W, _ = self.unpack(theta)
        return (self.X @ W.T).ravel()

    def surface_scale(self, theta):
        """‖x_i‖·‖w_j‖, the size against which s_k counts as zero."""
        W, _ = self.unpack(theta)
        return np.outer(self.xnorm, np.linalg.norm(W, axis=1)).ravel()

    def normals(self, ks):
        """Rows n_k = ∇s_k (x_i in the w_j block), shape (len(ks), D)."""
        ks = np.asarray(ks, dtype=np.int64)
        i, j = np.divmod(ks, self.width)
        d = self.X.shape[1]
        out = np.zeros((len(ks), self.dim))
        for row, (ii, jj) in enumerate(zip(i, j)):
            out[row, jj * d : (jj + 1) * d] = self.X[ii]
        return out

    def jumps(self, theta, ks):
        """J_k = ∂F/∂p_k (rows), exact: −(1−a)·r_i·(v_j x_i in the w_j block, s_ij in v_j), with
        r computed at p_k = 0 for every k in ks (on their surfaces f does not depend on p_k)."""
        ks = np.asarray(ks, dtype=np.int64)
        pattern = (self.surfaces(theta) > 0).astype(float)
        pattern[ks] = 0.0
        c = self.slopes(pattern)
        W, v, S, f = self._forward(theta, c)
        r = self.R * _loss_and_derivative(self.loss_name, f, self.y, self.factor)[1]
        i, j = np.divmod(ks, self.width)
        d = self.X.shape[1]
        h = self.width
        out = np.zeros((len(ks), self.dim))
        coef = -(1.0 - self.a) * r[i]
        for row, (ii, jj) in enumerate(zip(i, j)):
            out[row, jj * d : (jj + 1) * d] = coef[row] * v[jj] * self.X[ii]
            out[row, h * d + jj] = coef[row] * S[ii, jj]
        return out


@dataclass
class Result:
    """θ(t_final) and counters of one reference solve."""

    theta: np.ndarray
    t: float
    status: str  # "success", "max_events", "stuck"
    nfev: int = 0
    segments: int = 0
    crossings: int = 0
    sliding_starts: int = 0
    sliding_exits: int = 0
    max_sliding: int = 0
    sliding_final: int = 0
    wall: float = 0.0
    events: list = field(default_factory=list)  # (t, kind, k) with kind "cross", "slide", "exit"


def _decide(problem, theta, pattern, Z, q_tol):
    """Filippov's rule on the surfaces Z at zero: returns (sliding set, sides of all of Z as
    booleans (ignored for the sliding ones), q).

    q* = argmin_{q∈[0,1]^Z} ‖F0 + Jᵀq‖; a surface with q*_k at a bound leaves to the side of its
    normal velocity n_k·F(q*) (of its bound where that is zero). Once it has left, the field beyond
    has its p_k fixed to that side, so the minimal-norm problem is solved again over the surfaces
    still free, until no more leave (a leaver whose normal velocity turns back is freed again,
    once). This makes the sliding set's own weights lie in (0, 1) for the field it will
    integrate, which the first q* alone does not when surfaces of one neuron are coupled.
    """
    p0 = pattern.astype(float)
    p0[Z] = 0.0
    F0 = problem.field(theta, p0)
    J = problem.jumps(theta, Z)  # (m, D), rows J_k
    N = problem.normals(Z)
    m = len(Z)
    free = np.ones(m, bool)
    side = np.zeros(m, bool)
    refreed = np.zeros(m, bool)
    q = np.zeros(m)
    for _ in range(3 * m + 3):
        base = F0 + J[~free].T @ side[~free].astype(float)
        if free.any():
            res = lsq_linear(J[free].T, -base, bounds=(0.0, 1.0), method="bvls", tol=1e-15)
            q[free] = np.clip(res.x, 0.0, 1.0)
        q[~free] = side[~free]
        F = base + J[free].T @ q[free]
        vel = N @ F
        tiny = 1e-12 * np.linalg.norm(N, axis=1) * max(np.linalg.norm(F), 1e-300)
        leave = free & ((q <= q_tol) | (q >= 1.0 - q_tol))
        side[leave] = np.where(np.abs(vel[leave]) > tiny[leave], vel[leave] > 0, q[leave] >= 0.5)
        back = ~free & ~leave & ~refreed & (np.where(side, vel, -vel) < -tiny)
        if not leave.any() and not back.any():
            break
        free[leave] = False
        free[back] = True
        refreed |= back
    slide = free & (q > q_tol) & (q < 1.0 - q_tol)
    return Z[slide], side, q


class _Sliding:
    """Geometry of a sliding set S: normals N_S, an orthonormal basis Q of their span."""

    def __init__(self, problem, S):
        self.S = np.asarray(S, dtype=np.int64)
        if len(self.S):
            self.N = problem.normals(self.S)
            Q, Rm = np.linalg.qr(self.N.T)
            keep = np.abs(np.diag(Rm)) > 1e-12 * max(np.abs(np.diag(Rm)).max(), 1e-300)
            self.Q = Q[:, keep]
        else:
            self.N = np.zeros((0, problem.dim))
            self.Q = np.zeros((problem.dim, 0))

    def project(self, x):
        return x - self.Q @ (self.Q.T @ x) if self.Q.shape[1] else x

    def weights(self, problem, theta, pattern_zeroed):
        """Filippov weights q_S of the sliding solution: (N_S J_Sᵀ) q = −N_S F0."""
        F0 = problem.field(theta, pattern_zeroed)
        J = problem.jumps(theta, self.S)
        return np.linalg.lstsq(self.N @ J.T, -(self.N @ F0), rcond=None)[0]


def _first_event(dense, t_old, t_new, nodes, g_cross, cross_scalar, g_exit):
    """The first event inside the step [t_old, t_new], or None.

    The surfaces are sampled at the `nodes` of the step's dense output (so a surface that dips
    below zero and back inside a step is seen if the dip spans a node gap); the first sample gap
    whose right end has a negative value is searched with brentq, surface by surface for
    crossings and on g_exit for exits; the earliest root wins. Returns (t, kind).
    """
    ts = t_old + (t_new - t_old) * nodes
    Y = dense(ts)
    left = t_old
    for m, tb in enumerate(ts):
        vals = g_cross(Y[:, m])
        q_low = g_exit(Y[:, m]) if g_exit is not None else 1.0
        if vals.size and vals.min() <= 0 or q_low <= 0:
            found = []
            xtol = 4e-16 * max(1.0, abs(tb))
            for k in np.flatnonzero(vals <= 0) if vals.size else ():
                f = lambda t, k=k: cross_scalar(dense(t), k)
                found.append((brentq(f, left, tb, xtol=xtol) if f(left) > 0 else left, "cross"))
            if q_low <= 0:
                f = lambda t: g_exit(dense(t))
                found.append((brentq(f, left, tb, xtol=xtol) if f(left) > 0 else left, "exit"))
            return min(found)
        left = tb
    return None


_NODES = np.linspace(0.0, 1.0, 13)[1:]  # 12 samples per step for dips


def integrate(problem, theta0, t1, **kwargs):
    """θ(t1) of the Filippov gradient flow of `problem` from θ0: `_integrate` with BLAS held to one
    thread (the matrices are small; on a loaded 2-core machine a threaded OpenBLAS made each
    300×50×50 product 60× slower)."""
    with threadpoolctl.threadpool_limits(1):
        return _integrate(problem, theta0, t1, **kwargs)


def _integrate(
    problem,
    theta0,
    t1,
    rtol=1e-10,
    atol=None,
    method="DOP853",
    zero_tol=1e-12,
    q_tol=1e-9,
    max_events=200_000,
    max_wall=None,
    record_events=False,
):
    """θ(t1) of the Filippov gradient flow of `problem` from θ0 (see the module docstring).

    Steps scipy's `method` stepper (the one `solve_ivp(method=...)` drives: "DOP853", "Radau",
    "LSODA", "RK45", ...) on the frozen, projected field, with the vectorised, dip-aware event
    detection of `_first_event` instead of solve_ivp's per-function scalar events (n·h Python
    event functions would dominate the cost, and solve_ivp only compares step ends).
    atol defaults to rtol·1e-2·rms(θ0) (error control relative to the initial scale). Stops with
    status "max_events" after `max_events` segments or `max_wall` seconds, "stuck" after 1,000
    consecutive events without progress in t (Zeno behaviour), otherwise "success".
    """
    start = time.perf_counter()
    stepper = getattr(scipy.integrate, method)
    theta = np.array(theta0, dtype=np.float64)
    if atol is None:
        atol = rtol * 1e-2 * max(np.sqrt(np.mean(theta**2)), 1e-300)
    K = problem.num_surfaces
    pattern = problem.surfaces(theta) > 0
    offset = np.zeros(K)
    sliding = _Sliding(problem, [])
    res = Result(theta=theta, t=0.0, status="success")
    t, first_step, stuck = 0.0, None, 0

    def handle_event(theta, t):
        nonlocal pattern, offset, sliding
        s = problem.surfaces(theta)
        scale = problem.surface_scale(theta)
        nonsliding = np.ones(K, bool)
        nonsliding[sliding.S] = False
        sign = np.where(pattern, 1.0, -1.0)
        Z = np.union1d(sliding.S, np.flatnonzero(nonsliding & (sign * s <= zero_tol * scale)))
        if len(Z) == 0:
            return theta
        old_sliding = set(sliding.S.tolist())
        new_S, side, _ = _decide(problem, theta, pattern, Z, q_tol)
        new_set = set(new_S.tolist())
        for k, sd in zip(Z, side):
            if k in new_set:
                if k not in old_sliding:
                    res.sliding_starts += 1
                    if record_events:
                        res.events.append((t, "slide", int(k)))
                continue
            if k in old_sliding:
                res.sliding_exits += 1
                if record_events:
                    res.events.append((t, "exit", int(k)))
            elif sd != pattern[k]:
                res.crossings += 1
                if record_events:
                    res.events.append((t, "cross", int(k)))
            pattern[k] = sd
        sliding = _Sliding(problem, new_S)
        theta = sliding.project(theta)
        # hysteresis: the surfaces just given a side are not re-detected where they stand
        offset[:] = 0.0
        free = np.setdiff1d(Z, new_S)
        sign = np.where(pattern[free], 1.0, -1.0)
        s = problem.surfaces(theta)
        offset[free] = np.maximum(0.0, -sign * s[free]) + 0.5 * zero_tol * scale[free]
        res.max_sliding = max(res.max_sliding, len(new_S))
        return theta

    theta = handle_event(theta, 0.0)  # surfaces exactly at zero at t0
    while t < t1:
        if res.segments >= max_events or (max_wall and time.perf_counter() - start > max_wall):
            res.status = "max_events"
            break
        pz = pattern.astype(float)
        pz[sliding.S] = 0.0
        free = np.ones(K, bool)
        free[sliding.S] = False
        free_idx = np.flatnonzero(free)
        sign = np.where(pattern, 1.0, -1.0)
        geo = sliding

        def fun(_, x):
            return geo.project(problem.field(x, pz))

        def g_cross(x):
            return (sign * problem.surfaces(x) + offset)[free_idx]

        def cross_scalar(x, k):
            k = free_idx[k]
            return sign[k] * float(problem.normals([k])[0] @ x) + offset[k]

        def g_exit(x):
            q = geo.weights(problem, x, pz)
            return float(np.min(np.minimum(q, 1.0 - q)))

        solver = stepper(fun, t, theta, t1, rtol=rtol, atol=atol, first_step=first_step)
        event = None
        while solver.status == "running":
            solver.step()
            if solver.status == "failed":
                break
            dense = solver.dense_output()
            event = _first_event(dense, solver.t_old, solver.t, _NODES, g_cross, cross_scalar, g_exit if len(geo.S) else None)
            if event is not None:
                break
        res.nfev += solver.nfev
        res.segments += 1
        if solver.status == "failed":
            res.status = "failed"
            break
        first_step = min(solver.t - solver.t_old, t1 - t) if solver.t_old is not None else None
        t_new = event[0] if event is not None else solver.t
        theta = geo.project(dense(t_new) if event is not None else solver.y.copy())
        stuck = stuck + 1 if t_new - t <= 1e-13 * max(1.0, abs(t)) else 0
        t = t_new
        if stuck > 1000:
            res.status = "stuck"
            break
        if event is not None:
            theta = handle_event(theta, t)
        if not first_step or first_step <= 0 or t + first_step > t1:
            first_step = None
    res.theta, res.t = theta, t
    res.sliding_final = len(sliding.S)
    res.wall = time.perf_counter() - start
    return res


def reference(X, y, W0, v0, t1, loss="exponential", reduction="sum", activation="relu", slope=0.01, **kwargs):
    """`integrate` for the two-layer net on (X, y) from (W0, v0): returns (W(t1), v(t1), Result)."""
    W0 = np.asarray(W0, dtype=np.float64)
    net = TwoLayerNet(X, y, loss, reduction, activation, slope).bind(W0.shape[0])
    out = integrate(net, net.pack(W0, v0), t1, **kwargs)
    W, v = net.unpack(out.theta)
    return W, v, out


def cross_check(X, y, W0, v0, t1, rtols=(1e-10, 1e-12), second="Radau", second_rtol=1e-10, log=print, **problem):
    """Agreement of the reference with itself: DOP853 at two tolerances and a second integrator
    (`second`, None to skip). Returns the runs' counters and the relative weight differences
    max|θ_a − θ_b| / max|θ_b| against the tightest DOP853 run, and the drift of the
    balancedness v_j² − ‖w_j‖² (conserved by the flow, also while sliding) relative to max v_j²."""
    runs = {f"DOP853 {r:g}": reference(X, y, W0, v0, t1, rtol=r, **problem) for r in rtols}
    if second:
        runs[f"{second} {second_rtol:g}"] = reference(X, y, W0, v0, t1, rtol=second_rtol, method=second, **problem)
    Wb, vb, _ = runs[f"DOP853 {min(rtols):g}"]
    scale = max(np.max(np.abs(Wb)), np.max(np.abs(vb)))
    bal0 = np.asarray(v0) ** 2 - np.sum(np.asarray(W0) ** 2, axis=1)
    out = {}
    for name, (W, v, res) in runs.items():
        out[name] = {
            "status": res.status, "t": res.t, "wall": res.wall, "nfev": res.nfev, "segments": res.segments,
            "crossings": res.crossings, "sliding_starts": res.sliding_starts, "sliding_exits": res.sliding_exits,
            "max_sliding": res.max_sliding, "sliding_final": res.sliding_final,
            "diff_vs_tightest": max(np.max(np.abs(W - Wb)), np.max(np.abs(v - vb))) / scale,
            "balancedness_drift": float(np.max(np.abs(v**2 - np.sum(W**2, axis=1) - bal0)) / np.max(v**2)),
        }
        log(f"{name}: " + ", ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}" for k, val in out[name].items()))
    return out


def main(argv=None):
    """`python benchmarks/filippov_reference.py CASE ...`: `cross_check` on cases of the stress corpus."""
    import argparse
    import json

    import stress

    parser = argparse.ArgumentParser(description=cross_check.__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help=f"names from benchmarks/stress.py: {', '.join(stress.CASES)}")
    parser.add_argument("--rtols", default="1e-10,1e-12")
    parser.add_argument("--second", default="Radau", help="second integrator (scipy method), or '' for none")
    parser.add_argument("--second-rtol", type=float, default=1e-10)
    parser.add_argument("--out", default="", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    results = {}
    for name in args.cases:
        case = stress.CASES[name]
        _, params0, X, y = stress.problem(case)
        print(f"{name}:", flush=True)
        results[name] = cross_check(
            X, y, np.asarray(params0["W"]), np.asarray(params0["v"]), case.t1,
            rtols=tuple(float(r) for r in args.rtols.split(",")), second=args.second or None,
            second_rtol=args.second_rtol, loss=case.loss, reduction=case.reduction, activation=case.activation,
            log=lambda m: print("  " + m, flush=True),
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
