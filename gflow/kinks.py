"""Switching surfaces found from the program: the kinks of any JAX objective (issue 19).

`find(objective, params0, args)` traces L (`jax.make_jaxpr`) and reads its kinks off the jaxpr:
every primitive application whose value or derivative jumps with the sign of a function of θ.
Each kink k contributes switching functions s_k(θ) (an array, flattened into the K entries of
`Switching.surfaces`) and is *frozen* by a pattern p_k ∈ [0, 1] of the same shape, p_k = 1
selecting the branch valid for s_k > 0:

| primitive (as lowered)                       | s                 | frozen value          |
|----------------------------------------------|-------------------|-----------------------|
| `max(a, b)` (relu: `max(x, 0.0)`, hinge      | a − b             | b + p (a − b)         |
| `max(0, 1 − m)`)                             |                   |                       |
| `min(a, b)`                                  | a − b             | a + p (b − a)         |
| `abs(x)`                                     | x                 | (2p − 1) x            |
| `sign(x)`                                    | x                 | 2p − 1                |
| `gt/ge(a, b)` (`lt/le`: s = b − a), used by  | a − b             | the indicator is p:   |
| `select_n` (`jnp.where`, leaky relu's        |                   | c₀ + p (c₁ − c₀),     |
| `select_n(x >= 0, ...)`), a cast to float,   |                   | p, ¬: 1 − p,          |
| `not`/`and`/`or`                             |                   | ∧: p p′, ∨: p + p′ − p p′ |
| `clamp(lo, x, hi)` = min(max(x, lo), hi)     | two kinks         | as max and min        |

A comparison used several times is one kink (its p is shared). Kinks whose arguments do not
depend on θ (data only) are not surfaces, and `stop_gradient` cuts the dependence. Sub-programs
are entered: `jit`, `remat`, `custom_vjp_call` and those `custom_jvp_call`s whose derivative
rule branches on a sign (jax.nn.relu, relu6: their jvp holds `gt`/`select_n`); a custom_jvp
whose rule is smooth (`logaddexp`, hence softplus and the logistic loss) is kept whole, so the
max and abs inside its primal, which cancel, are not surfaces. Every frozen value is affine in
its p_k and equals the original on the pattern p = [s > 0]; on s_k = 0 the branches meet for a
continuous L, which the switching solve assumes (a `where` that jumps in value is not a kink of
a continuous objective and is integrated wrongly).

What is not understood makes `find` return None with a warning (the plain solve then runs):
a sign comparison consumed by anything else, `reduce_max`/`argmax`/`sort`/rounding of a
θ-dependent value that reaches the output without `stop_gradient` (logsumexp's max is
stop-gradiented and fine), and kinks inside `cond`/`while`/`scan`.

Surfaces of deeper layers are nonlinear in θ (s = W₂ relu(W₁x)): the switching solve's crossing
location (a polynomial fit of s along the step's dense output) holds for them to the dense
output's accuracy, and the state is re-projected onto sliding surfaces at each step start by one
Newton step.
"""

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax._src import core

from .switching import Switching

_COMPARISONS = {"gt": 1.0, "ge": 1.0, "lt": -1.0, "le": -1.0}
_KINKS = frozenset({"max", "min", "abs", "sign", "clamp", *_COMPARISONS})
_NOT_UNDERSTOOD = frozenset({
    "reduce_max", "reduce_min", "argmax", "argmin", "sort", "cummax", "cummin",
    "floor", "ceil", "round", "reduce_precision", "top_k",
})
_POSITIVE = frozenset({"add", "mul", "reduce_sum", "broadcast_in_dim", "reshape", "squeeze"})
_LINEAR = frozenset({
    "add", "sub", "neg", "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims",
    "convert_element_type", "reduce_sum", "slice", "dynamic_slice", "concatenate", "copy", "copy_p",
    "select_n", "gather", "pad", "rev",
})
_CONTROL = frozenset({"cond", "while", "scan"})


class NotUnderstood(Exception):
    """A kink `find` cannot freeze (see the module docstring)."""


class _Value:
    """A value of the traced program with what the interpreter knows about it: whether it
    depends on θ (`dep`), whether a branch it cannot freeze reaches it (`bad`), and for a
    θ-dependent sign comparison its frozen indicator (`indicator()`, allocated on first use)."""

    __slots__ = ("val", "dep", "bad", "indicator", "positive", "affine")

    def __init__(self, val, dep=False, bad=False, indicator=None, positive=False, affine=True):
        self.val, self.dep, self.bad, self.indicator = val, dep, bad, indicator
        self.affine = affine  # affine in θ for a fixed pattern (first-layer pre-activations)
        self.positive = positive  # > 0 by construction (exp, positive literals, sums/products)


class _Run:
    """One walk of the program: `pattern` None collects the switching functions in order,
    otherwise the frozen program reads its p from `pattern` (flat) in the same order."""

    def __init__(self, kinky, pattern):
        self.kinky = kinky
        self.pattern = pattern
        self.surfaces = []
        self.used = 0
        self.linear = True  # whether every switching function so far is affine in θ

    def kink(self, s, affine):
        """A new kink with switching functions s: its pattern (frozen) or [s > 0] (collecting)."""
        self.linear = self.linear and affine
        if self.pattern is None:
            self.surfaces.append(jnp.ravel(s))
            return (s > 0).astype(s.dtype)
        size = int(np.prod(s.shape))
        p = jax.lax.dynamic_slice_in_dim(self.pattern, self.used, size).reshape(s.shape)
        self.used += size
        return p.astype(s.dtype)


def _bind(eqn, invals):
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return out if eqn.primitive.multiple_results else [out]


def _sub_jaxpr(eqn):
    """(jaxpr, consts) of a call-like eqn whose body is inlined, else None."""
    name = eqn.primitive.name
    params = eqn.params
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in params and name not in _CONTROL:
            j = params[key]
            if isinstance(j, core.ClosedJaxpr):
                return j.jaxpr, j.consts
            if isinstance(j, core.Jaxpr):
                return j, ()
    return None


def _live(jaxpr, live_out):
    """The eqns of `jaxpr` through which θ can reach its `live_out` outputs' derivative (not
    through `stop_gradient`, not unused), and the variables they write: only their kinks are
    surfaces."""
    live = {v for v, keep in zip(jaxpr.outvars, live_out) if keep and not isinstance(v, core.Literal)}
    eqns = set()
    for eqn in reversed(jaxpr.eqns):
        if eqn.primitive.name != "stop_gradient" and any(v in live for v in eqn.outvars):
            eqns.add(id(eqn))
            live.update(v for v in eqn.invars if not isinstance(v, core.Literal))
    return eqns, live


def _run(run: _Run, jaxpr, consts, inputs, live_out=None):
    env = {}
    live, used = _live(jaxpr, [True] * len(jaxpr.outvars) if live_out is None else live_out)

    def read(v):
        if isinstance(v, core.Literal):  # the only constants whose sign is known at every trace
            return _Value(v.val, positive=bool(np.all(np.asarray(v.val) > 0)))
        return env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = _Value(c)
    for v, x in zip(jaxpr.invars, inputs):
        env[v] = x
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if id(eqn) in live:
            outs = _eqn(run, eqn, ins, [v in used for v in eqn.outvars])
        else:
            outs = [_Value(v) for v in _bind(eqn, [x.val for x in ins])]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _eqn(run, eqn, ins, live_out):
    name = eqn.primitive.name
    dep = any(x.dep for x in ins)
    bad = any(x.bad for x in ins)
    affine = all(x.affine for x in ins)
    vals = [x.val for x in ins]
    if name == "stop_gradient":
        return [_Value(v) for v in _bind(eqn, vals)]
    if not dep:
        return [_Value(v, bad=bad) for v in _bind(eqn, vals)]
    sub = _sub_jaxpr(eqn)
    if sub is not None and (name != "custom_jvp_call" or id(eqn) in run.kinky
                            or any(x.indicator is not None for x in ins)):
        jaxpr, consts = sub
        return _run(run, jaxpr, consts, ins[len(ins) - len(jaxpr.invars):], live_out)
    if name in _COMPARISONS:
        a, b = vals
        s = _COMPARISONS[name] * (a - b)
        s = jnp.broadcast_to(s, jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b)))
        cell = []

        def indicator():
            if not cell:
                cell.append(run.kink(s, affine))
            return cell[0]

        return [_Value(_bind(eqn, vals)[0], dep=True, bad=bad, indicator=indicator)]
    if name == "exp":
        return [_Value(_bind(eqn, vals)[0], dep=True, bad=bad, positive=True)]
    if any(x.indicator is not None for x in ins):
        return [_consume(run, eqn, ins, bad)]
    if name in ("max", "min"):
        a, b = vals
        s = jnp.broadcast_to(a - b, jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b)))
        p = run.kink(s, affine)
        out = b + p * (a - b) if name == "max" else a + p * (b - a)
        return [_Value(out, dep=True, bad=bad, affine=affine)]
    if name in _POSITIVE and all(x.positive for x in ins):
        return [_Value(_bind(eqn, vals)[0], dep=True, bad=bad, positive=True)]
    if name in ("abs", "sign") and ins[0].positive:  # |Σ exp| (logsumexp): never at zero
        return [_Value(_bind(eqn, vals)[0], dep=True, bad=bad, positive=True)]
    if name == "abs":
        return [_Value((2 * run.kink(vals[0], affine) - 1) * vals[0], dep=True, bad=bad, affine=affine)]
    if name == "sign":
        return [_Value(2 * run.kink(vals[0], affine) - 1, dep=True, bad=bad)]
    if name == "clamp":
        lo, x, hi = vals
        shape = jnp.broadcast_shapes(jnp.shape(lo), jnp.shape(x), jnp.shape(hi))
        x = jnp.broadcast_to(x, shape)
        low = jnp.broadcast_to(lo, shape)
        x = low + run.kink(x - low, affine) * (x - low)
        high = jnp.broadcast_to(hi, shape)
        return [_Value(x + run.kink(x - high, affine) * (high - x), dep=True, bad=bad, affine=affine)]
    outs = _bind(eqn, vals)
    if name in _NOT_UNDERSTOOD or name in _CONTROL and _has_kinks(eqn):
        bad = True
    # affine maps of affine values stay affine; a product only with data
    if name not in _LINEAR and not (name in ("mul", "dot_general") and sum(x.dep for x in ins) == 1):
        affine = False
    return [_Value(v, dep=True, bad=bad, affine=affine) for v in outs]


def _consume(run, eqn, ins, bad):
    """An eqn that reads a frozen sign comparison: its selection by the indicator p."""
    name = eqn.primitive.name
    q = [x.indicator for x in ins]
    if name == "select_n" and q[0] is not None and len(ins) == 3 and all(f is None for f in q[1:]):
        c0, c1 = ins[1].val, ins[2].val
        p = q[0]()
        return _Value(c0 + p.astype(jnp.result_type(c0)) * (c1 - c0), dep=True, bad=bad)
    if name == "convert_element_type" and jnp.issubdtype(eqn.params["new_dtype"], jnp.floating):
        return _Value(q[0]().astype(eqn.params["new_dtype"]), dep=True, bad=bad)
    val = _bind(eqn, [x.val for x in ins])[0]
    if name == "not":
        return _Value(val, dep=True, bad=bad, indicator=lambda: 1 - q[0]())
    if name in ("and", "or") and len(ins) == 2:
        a, b = [f if f is not None else (lambda x=x: jnp.asarray(x.val, float)) for f, x in zip(q, ins)]
        both = (lambda: a() * b()) if name == "and" else (lambda: a() + b() - a() * b())
        return _Value(val, dep=True, bad=bad, indicator=both)
    if name == "broadcast_in_dim":
        return _Value(val, dep=True, bad=bad, indicator=lambda: jax.lax.broadcast_in_dim(q[0](), **eqn.params))
    if name == "reshape":
        return _Value(val, dep=True, bad=bad, indicator=lambda: jnp.reshape(q[0](), val.shape))
    return _Value(val, dep=True, bad=True)


def _eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in core.jaxprs_in_params(eqn.params):
            yield from _eqns(sub)


def _has_kinks(eqn):
    return any(e.primitive.name in _KINKS for sub in core.jaxprs_in_params(eqn.params) for e in _eqns(sub))


def _branches_on_sign(eqn):
    """Whether a custom_jvp_call's derivative rule branches on a sign (relu: `select_n` on
    `x > 0`), read from the jaxpr of its jvp (the primal custom calls inside it left out)."""
    variables = [v for v in eqn.invars if not isinstance(v, core.Literal)]
    with warnings.catch_warnings():  # a one-eqn jaxpr has no source to name in DebugInfo
        warnings.simplefilter("ignore", DeprecationWarning)
        body = core.Jaxpr([], variables, eqn.outvars, [eqn])
    xs = [jnp.zeros(v.aval.shape, v.aval.dtype) for v in variables]
    try:
        jvp = jax.make_jaxpr(lambda x, t: jax.jvp(lambda *a: core.eval_jaxpr(body, [], *a), x, t))(xs, xs)
    except Exception:  # noqa: BLE001 - a rule that cannot be traced alone: enter the body
        return True

    def names(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name == "custom_jvp_call":
                continue
            yield e.primitive.name
            for sub in core.jaxprs_in_params(e.params):
                yield from names(sub)

    return bool(set(names(jvp.jaxpr)) & _KINKS)


class Program(eqx.Module):
    """A traced objective, re-run with its kinks exposed (`surfaces`) or frozen (`frozen`).

    The program (a jaxpr) is static, hashed by identity: `find` traces an objective once per
    input shapes, so equal calls compile once. The arrays of an objective that is a pytree (an
    `eqx.Module` such as `gflow.losses.Objective`) are inputs of the program, held in `data`:
    an equal objective with other data of the same shapes reuses the trace and the compilation.
    Constants the objective closes over are `consts`. Both are leaves."""

    jaxpr: Any = eqx.field(static=True)
    consts: list
    data: Any
    in_tree: Any = eqx.field(static=True)
    kinky: frozenset = eqx.field(static=True)

    def _walk(self, pattern, params, args):
        leaves, tree = jax.tree.flatten((self.data, params) + (() if args is None else (args,)))
        if tree != self.in_tree:
            raise ValueError(f"the program was traced for inputs {self.in_tree}, got {tree}")
        first, n = len(jax.tree.leaves(self.data)), len(jax.tree.leaves(params))
        inputs = [_Value(x, dep=first <= i < first + n) for i, x in enumerate(leaves)]
        run = _Run(self.kinky, None if pattern is None else jnp.ravel(pattern))
        out = _run(run, self.jaxpr, self.consts, inputs)[0]
        return run, out

    def surfaces(self, params, args=None):
        """s(θ): every kink's switching functions, flattened and concatenated, shape (K,)."""
        run, _ = self._walk(None, params, args)
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return jnp.concatenate(run.surfaces).astype(dtype) if run.surfaces else jnp.zeros(0, dtype)

    def frozen(self, params, pattern, args=None):
        """L(θ, p): the objective with kink k's branch selected by p_k (affine in p_k)."""
        return self._walk(pattern, params, args)[1].val


_TRACED: dict = {}  # (the objective's static part, input shapes) → (Program, has kinks)


def _avals(tree):
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves)


def find(objective: Callable, params0, args=None, **options) -> Switching | None:
    """The `Switching` of `objective` read from its program (see the module docstring), or
    None where it has no θ-dependent kink or holds one that cannot be frozen (with a warning).

    `objective(params)` (or `objective(params, args)`) must return a scalar; `options` go to
    `Switching` (`max_sliding`, `max_crossings`). The trace of one objective (for a pytree
    objective: of its static part) at one set of input shapes is cached, so that a second
    `simulate` reuses the first one's compilation."""
    data, static = eqx.partition(objective, eqx.is_array)
    call = (params0,) if args is None else (params0, args)
    try:
        key = (static, _avals(data), _avals(call))
        hash(key)
    except TypeError:  # an unhashable objective is traced every time
        key = None
    if key is not None and key in _TRACED:
        program, kinked, linear = _TRACED[key]
        program = dataclasses.replace(program, data=data)
    else:
        closed = jax.make_jaxpr(lambda data, *call: eqx.combine(data, static)(*call))(data, *call)
        kinky = frozenset(
            id(e) for e in _eqns(closed.jaxpr) if e.primitive.name == "custom_jvp_call" and _branches_on_sign(e)
        )
        in_tree = jax.tree.structure((data,) + call)
        program = Program(closed.jaxpr, list(closed.consts), data, in_tree, kinky)
        run, out = program._walk(None, params0, args)
        if out.bad:
            warnings.warn(
                "gflow.kinks.find: the objective holds a branch that cannot be frozen (a max/sort/"
                "rounding of the parameters reaching the loss, or a kink inside cond/while/scan); "
                "solving without switching surfaces", stacklevel=2)
        kinked, linear = bool(run.surfaces) and not out.bad, run.linear
        if key is not None:
            _TRACED[key] = (program, kinked, linear)
    if not kinked:
        return None
    return Switching(surfaces=program.surfaces, objective=program.frozen, linear=linear, **options)
