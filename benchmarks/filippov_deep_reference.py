"""An event-driven Filippov reference for small ReLU-type nets, independent of gflow.

numpy forward and backward passes of a frozen-pattern net (`Net`: any depth, relu or leaky
relu, optional biases, square or hinge loss), scipy DOP853 on each smooth piece, a terminal event
at the first sign change of any switching function (every hidden pre-activation, and the hinge
margins), the crossed entry flipped, and a restart. Surfaces may slide, any number at once: on
the sliding set S the field is F(θ, p) with p_S = α, the Filippov weights solving N F = 0 for the
normals N = [∇s_k]_{k∈S} (`weights`, Newton's method; the field is then tangent to every
sliding surface), until some α_k leaves [0, 1] (an exit event). Normals by complex-step
differentiation of the numpy net. Where the flow reaches a surface, every assignment of the
surfaces at s = 0 to "slides", "side 0", "side 1" is checked against the Filippov conditions
(`continuation`) and the one that holds is taken; where none or several hold it raises
`RuntimeError` with its time, so a caller can choose a horizon before it, as do more than
`max_events` events (a guard against a loop of decisions). Shares no code with gflow (docs/kinks.md, tests/test_kinks.py,
benchmarks/kinks_any.py).
"""

import itertools

import numpy as np
from scipy.integrate import solve_ivp


class Net:
    """f = a_L v + c, a_l = z_l ⊙ (α + (1 − α) m_l), z_l = a_{l−1} W_lᵀ + b_l; loss 'square'
    (mean (f − y)²) or 'hinge' (mean q (1 − y f), q the margin pattern)."""

    def __init__(self, X, y, shapes, alpha=0.0, loss="square", bias=False):
        self.X, self.y, self.shapes, self.alpha, self.loss, self.bias = X, y, shapes, alpha, loss, bias

    def unpack(self, theta):
        out, i = [], 0
        for shp in self.shapes:
            size = int(np.prod(shp)); out.append(theta[i:i + size].reshape(shp)); i += size
        return out

    def forward(self, theta, masks):
        P = self.unpack(theta)
        L = (len(P) - (2 if self.bias else 1)) // (2 if self.bias else 1)
        a, zs, acts = self.X, [], [self.X]
        for l in range(L):
            W = P[2 * l] if self.bias else P[l]
            z = a @ W.T + (P[2 * l + 1] if self.bias else 0)
            zs.append(z)
            a = z * (self.alpha + (1 - self.alpha) * masks[l])
            acts.append(a)
        v = P[2 * L] if self.bias else P[L]
        f = a @ v.reshape(-1) + (P[2 * L + 1].reshape(()) if self.bias else 0)
        return P, L, zs, acts, f

    def surfaces(self, theta, masks):
        P, L, zs, acts, f = self.forward(theta, masks)
        s = [z.ravel() for z in zs]
        if self.loss == "hinge":
            s.append(1 - self.y * f)
        return np.concatenate(s)

    def split(self, pattern):
        masks, i = [], 0
        n = self.X.shape[0]
        for shp in self.shapes[:: (2 if self.bias else 1)][:-1]:
            h = shp[0]; masks.append(pattern[i:i + n * h].reshape(n, h)); i += n * h
        q = pattern[i:] if self.loss == "hinge" else None
        return masks, q

    def field(self, theta, pattern):
        masks, q = self.split(pattern)
        P, L, zs, acts, f = self.forward(theta, masks)
        n = self.X.shape[0]
        r = 2 * (f - self.y) / n if self.loss == "square" else -q * self.y / n
        grads = [None] * len(P)
        v = P[2 * L] if self.bias else P[L]
        grads[2 * L if self.bias else L] = (acts[L].T @ r).reshape(v.shape)
        if self.bias:
            grads[2 * L + 1] = np.sum(r).reshape(P[2 * L + 1].shape)
        da = np.outer(r, v.reshape(-1))
        for l in reversed(range(L)):
            dz = da * (self.alpha + (1 - self.alpha) * masks[l])
            grads[2 * l if self.bias else l] = dz.T @ acts[l]
            if self.bias:
                grads[2 * l + 1] = dz.sum(0)
            W = P[2 * l] if self.bias else P[l]
            da = dz @ W
        return -np.concatenate([g.ravel() for g in grads])



def normal(net, theta, pattern, k):
    masks = net.split(pattern)[0]
    h = 1e-30
    D = theta.size
    g = np.empty(D)
    for j in range(D):
        th = theta.astype(complex); th[j] += 1j * h
        g[j] = net.surfaces(th, masks)[k].imag / h
    return g


def weights(net, theta, pattern, S, iters=30):
    """Filippov weights α of the sliding set S (list) at theta: p_S = α with N F(θ, p) = 0,
    N = [∇s_k]_{k∈S}, solved by Newton's method with a difference Jacobian in α (one step where F
    is affine in p_S; iterated where patterns multiply, e.g. a hinge margin and a ReLU of one
    sample). Returns (α, the field F(θ, p)) — the field tangent to every surface of S."""
    N = np.stack([normal(net, theta, pattern, k) for k in S])
    p = pattern.copy()
    alpha = np.full(len(S), 0.5)
    for _ in range(iters):
        p[S] = alpha
        F = net.field(theta, p)
        g = N @ F
        cols = []
        for i, k in enumerate(S):
            q = p.copy(); q[k] = alpha[i] + 1.0
            cols.append(N @ (net.field(theta, q) - F))
        step = np.linalg.solve(np.stack(cols, axis=1), -g)
        alpha = alpha + step
        if np.max(np.abs(step)) < 1e-14:
            break
    p[S] = alpha
    return alpha, net.field(theta, p)


def continuation(net, theta, pattern, C, t, tol=1e-10):
    """The flow reaches a point where the surfaces C (list) are at s = 0: each of them either
    slides or is left to side 0 or 1. Every assignment is checked against the Filippov
    conditions — the sliding weights in [0, 1], and the field (tangent to the sliding ones)
    leaving every other surface of C into its side — and the one that holds is returned as
    (sliding list, pattern). None or several: `RuntimeError` (an ambiguity this reference does
    not resolve)."""
    valid = []
    for choice in itertools.product(("slide", 0.0, 1.0), repeat=len(C)):
        p = pattern.copy()
        S = [k for k, c in zip(C, choice) if c == "slide"]
        for k, c in zip(C, choice):
            if c != "slide":
                p[k] = c
        if S:
            try:
                alpha, F = weights(net, theta, p, S)
            except np.linalg.LinAlgError:  # no weights make the field tangent to all of S
                continue
            if np.any(alpha < -tol) or np.any(alpha > 1 + tol):
                continue
        else:
            F = net.field(theta, p)
        if all((normal(net, theta, p, k) @ F) * (1 if c else -1) > 0 for k, c in zip(C, choice) if c != "slide"):
            valid.append((S, p))
    if len(valid) != 1:
        raise RuntimeError(f"at t = {t}: {len(valid)} Filippov continuations of surfaces {C}")
    return valid[0]


def integrate(net, theta0, T, rtol=1e-12, max_events=1000):
    """θ(T) from θ(0) = theta0 and the counts of crossings, sliding onsets and exits."""
    theta = np.array(theta0, float)
    atol = rtol * 1e-2 * np.sqrt(np.mean(theta ** 2))
    pattern = np.ones(10**6)
    for _ in range(len(net.shapes) + 1):
        pattern = (net.surfaces(theta, net.split(pattern)[0]) > 0).astype(float)
    t, crossings, slides, exits, nfev = 0.0, 0, 0, 0, 0
    sliding, decided = [], []
    while t < T:
        if crossings + slides + exits > max_events:
            raise RuntimeError(f"more than {max_events} events by t = {t}")
        sign = np.where(pattern > 0, 1.0, -1.0)
        masks = net.split(pattern)[0]
        s_now = net.surfaces(theta, masks)
        offset = 2 * np.maximum(0.0, -sign * s_now)
        # surfaces just decided lie at s ≈ 0 up to round-off (~1e-18 here), which can cross
        # back within the first step: they fire only past a margin far above it
        offset[decided] += 1e-13 * np.max(np.abs(s_now))
        offset[sliding] = np.inf  # sliding surfaces are not crossings
        S, base = list(sliding), pattern.copy()
        memo = {}

        def slide_field(th):
            key = th.tobytes()
            if key not in memo:
                memo.clear()
                memo[key] = weights(net, th, base, S)
            return memo[key]

        def rhs(t, th):
            return slide_field(th)[1] if S else net.field(th, base)

        def cross(t, th):
            return np.min(sign * net.surfaces(th, masks) + offset)

        def leave(t, th):
            alpha = slide_field(th)[0]
            return np.min(np.minimum(alpha, 1 - alpha))

        events = [cross] + ([leave] if S else [])
        for e in events:
            e.terminal, e.direction = True, -1
        sol = solve_ivp(rhs, (t, T), theta, method="DOP853", rtol=rtol, atol=atol, events=events)
        nfev += sol.nfev
        theta, t = sol.y[:, -1], sol.t[-1]
        if sol.status != 1:
            continue
        if S and len(sol.t_events[1]):
            # an exit: the surface whose weight reached 0 or 1 leaves to that side; the rest of
            # the set is decided again without it
            alpha = slide_field(theta)[0]
            i = int(np.argmin(np.minimum(alpha, 1 - alpha)))
            pattern[S[i]] = 1.0 if alpha[i] > 0.5 else 0.0
            crossed, left, C = None, [S[i]], [j for j in S if j != S[i]]
        else:  # a crossing: the sliding set and the crossed surface are decided together
            crossed = int(np.argmin(sign * net.surfaces(theta, masks) + offset))
            left, C = [], S + [crossed]
        new_S, new_pattern = continuation(net, theta, pattern, C, t) if C else ([], pattern)
        if crossed is not None:
            crossings += int(crossed not in new_S and new_pattern[crossed] != pattern[crossed])
        slides += len([j for j in new_S if j not in S])
        exits += len([j for j in S if j not in new_S])
        decided = left + [j for j in C if j not in new_S]
        sliding, pattern = new_S, new_pattern
    return theta, {"crossings": crossings, "slides": slides, "exits": exits, "nfev": nfev}
