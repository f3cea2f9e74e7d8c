"""An event-driven Filippov reference for small ReLU-type nets, independent of gflow.

numpy forward and backward passes of a frozen-pattern net (`Net`: any depth, relu or leaky
relu, optional biases, square or hinge loss), scipy DOP853 on each smooth piece, a terminal event
at the first sign change of any switching function (every hidden pre-activation, and the hinge
margins), the crossed entry flipped, and a restart. When the field on the new side points back
into the surface, the surface slides: the Filippov field there is the one-sided field projected
onto the surface's tangent space, F − n (n·F)/(n·n) (the jump of ∇L across a surface of a
continuous L is normal to it), until its Filippov weight α = −n·F₀ / n·(F₁ − F₀) leaves [0, 1]
(an exit event). Normals n = ∇s_k by complex-step differentiation of the numpy net. One surface
slides at a time: where the flow reaches a surface while sliding on another, the continuation is
the one one-surface mode whose Filippov conditions hold (cross it and keep sliding, or slide on it
and leave the other: `_sliding_mode`); where none or both hold (two surfaces slide) it raises
`RuntimeError` with its time, so a caller can choose a horizon before it (as do more than `max_events` events, a guard against a loop of decisions). Shares no code with gflow (docs/kinks.md, tests/test_kinks.py,
benchmarks/kinks_any.py).
"""

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


def integrate(net, theta0, T, rtol=1e-12, max_events=1000):
    theta = np.array(theta0, float)
    atol = rtol * 1e-2 * np.sqrt(np.mean(theta ** 2))
    pattern = np.ones(10**6)
    for _ in range(len(net.shapes) + 1):
        pattern = (net.surfaces(theta, net.split(pattern)[0]) > 0).astype(float)
    t, crossings, slides, exits, nfev = 0.0, 0, 0, 0, 0
    sliding = None
    while t < T:
        if crossings + slides + exits > max_events:
            raise RuntimeError(f"more than {max_events} events by t = {t}")
        sign = np.where(pattern > 0, 1.0, -1.0)
        masks = net.split(pattern)[0]
        offset = 2 * np.maximum(0.0, -sign * net.surfaces(theta, masks))
        if sliding is not None:
            offset[sliding] = np.inf  # the sliding surface is not a crossing

        def sides(th):
            p0, p1 = pattern.copy(), pattern.copy()
            p0[sliding], p1[sliding] = 0.0, 1.0
            n = normal(net, th, pattern, sliding)
            F0, F1 = net.field(th, p0), net.field(th, p1)
            return n, F0, F1

        def rhs(t, th):
            if sliding is None:
                return net.field(th, pattern)
            n, F0, F1 = sides(th)
            return F0 - n * (n @ F0) / (n @ n)

        def cross(t, th):
            return np.min(sign * net.surfaces(th, masks) + offset)

        def leave(t, th):
            n, F0, F1 = sides(th)
            alpha = -(n @ F0) / (n @ (F1 - F0))
            return min(alpha, 1 - alpha)

        events = [cross] + ([leave] if sliding is not None else [])
        for e in events:
            e.terminal, e.direction = True, -1
        sol = solve_ivp(rhs, (t, T), theta, method="DOP853", rtol=rtol, atol=atol, events=events)
        nfev += sol.nfev
        theta, t = sol.y[:, -1], sol.t[-1]
        if sol.status != 1:
            continue
        if sliding is not None and len(sol.t_events[1]):
            n, F0, F1 = sides(theta)
            alpha = -(n @ F0) / (n @ (F1 - F0))
            pattern[sliding] = 1.0 if alpha > 0.5 else 0.0
            sliding, exits = None, exits + 1
            continue
        k = int(np.argmin(sign * net.surfaces(theta, masks) + offset))
        if sliding is not None:
            # reaching surface k while sliding on j: the continuation is the one-surface mode
            # whose Filippov conditions hold (`_sliding_mode`)
            mode, side = _sliding_mode(net, theta, pattern, sliding, k, t)
            if mode == "cross":
                pattern[k] = side
                crossings += 1
            else:
                pattern[sliding] = side
                sliding, slides, exits = k, slides + 1, exits + 1
            continue
        new = pattern.copy(); new[k] = 1 - new[k]
        vel = [normal(net, theta, p, k) @ net.field(theta, p) for p in (pattern, new)]
        if np.sign(vel[0]) != np.sign(vel[1]):
            sliding, slides = k, slides + 1
            continue
        pattern = new
        crossings += 1
    return theta, {"crossings": crossings, "slides": slides, "exits": exits, "nfev": nfev}


def _slide(net, theta, pattern, j, k, side_k):
    """Sliding on j with surface k on side `side_k`: the Filippov weight α_j of the field on j and
    the normal velocity of k under that field."""
    n_j, n_k = normal(net, theta, pattern, j), normal(net, theta, pattern, k)
    p0, p1 = pattern.copy(), pattern.copy()
    p0[k] = p1[k] = side_k
    p0[j], p1[j] = 0.0, 1.0
    F0, F1 = net.field(theta, p0), net.field(theta, p1)
    alpha = -(n_j @ F0) / (n_j @ (F1 - F0))
    return alpha, n_k @ (F0 + alpha * (F1 - F0))


def _sliding_mode(net, theta, pattern, j, k, t):
    """While sliding on j, the flow reaches surface k. Two one-surface continuations: k is crossed
    to side b and j keeps sliding ("cross", b), valid where α_j ∈ [0, 1] and the field leaves k
    into side b; or k slides and j is left to side a ("swap", a), valid where α_k ∈ [0, 1] and the
    field leaves j into side a. Exactly one must hold (else `RuntimeError`: two surfaces slide,
    or the choice is ambiguous). A crossing's decision must use the field *on* j: the
    one-sided fields of j's old side can point the other way (t = 1.4708 of the deep seed-1 net:
    they flip k and keep sliding on j at α_j = −0.32, not a Filippov solution)."""
    valid = []
    for b in (0.0, 1.0):
        alpha, vel = _slide(net, theta, pattern, j, k, b)
        if 0 <= alpha <= 1 and vel * (1 if b else -1) > 0:
            valid.append(("cross", b))
    for a in (0.0, 1.0):
        alpha, vel = _slide(net, theta, pattern, k, j, a)
        if 0 <= alpha <= 1 and vel * (1 if a else -1) > 0:
            valid.append(("swap", a))
    if len(valid) != 1:
        raise RuntimeError(f"at t = {t}: {len(valid)} one-surface continuations (two surfaces slide or ambiguous)")
    return valid[0]
