"""Symbolic shapes: which dims are provably equal, so rewrites can drop no-op broadcasts,
SumToShape, reshapes... even where static shapes say ``None``.

A dim is an ``int`` (static), ``("in", v, k)`` (dim k of the graph input v), ``("max", dims)``
(a broadcast of different unknown dims) or ``("v", v, k)`` (dim k of v, nothing more known).
Equal symbols mean equal run-time sizes in every valid execution; a static dim is always an
int, so equal symbolic shapes imply equal static shapes. ``value_of`` gives the same kind of
symbol for int scalars (``x.shape[0]`` is the dim it reads).
"""

from __future__ import annotations

from engine.graph import Constant, Variable


def broadcast(*shapes: tuple) -> tuple:
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(ndim):
        dims = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        ints = [d for d in dims if isinstance(d, int) and d != 1]
        if ints:
            result.append(ints[0])
            continue
        syms: set = set()
        for d in dims:
            if not isinstance(d, int):
                syms.update(d[1] if d[0] == "max" else (d,))
        if not syms:
            result.append(1)
        elif len(syms) == 1:
            result.append(syms.pop())
        else:
            result.append(("max", frozenset(syms)))
    return tuple(result)


SUBST = "__subst__"  # the cache entry holding the dim equalities (see ``unify_dims``)
WHY = "__why__"  # symbol -> (op name, creation site) of the node that forced its value


def _find(subst: dict, d):
    while not isinstance(d, int) and d in subst:
        d = subst[d]
    return d


def unify_dims(outputs, cache: dict) -> int:
    """Record dims that ops force to be equal in every run that does not fail (the inner dims
    of a matmul, the rows of logits and labels, a conv's channels), so ``x.shape[1]`` of a
    ``T.matrix`` multiplied by a (784, 500) matrix is known to be 784. Returns how many."""
    from engine.graph import toposort

    pairs = []
    for node in toposort(outputs):
        name, ins = type(node.op).__name__, node.inputs
        if name == "MatMul":
            pairs.append((symbolic_shape(ins[0], cache)[-1], symbolic_shape(ins[1], cache)[-2], node))
        elif name == "SoftmaxCrossEntropy":
            pairs.append((symbolic_shape(ins[0], cache)[0], symbolic_shape(ins[1], cache)[0], node))
        elif name == "Conv2d" and getattr(node.op, "groups", None) == 1:
            pairs.append((symbolic_shape(ins[0], cache)[1], symbolic_shape(ins[1], cache)[1], node))
    subst = cache.setdefault(SUBST, {})
    why = cache.setdefault(WHY, {})
    count = 0
    for a, b, node in pairs:
        a, b = _find(subst, a), _find(subst, b)
        if a == b or (isinstance(a, int) and isinstance(b, int)):
            continue
        if isinstance(a, int) or (not isinstance(b, int) and a[0] == "in" and b[0] != "in"):
            a, b = b, a
        subst[a] = b  # a symbol -> an int, or a derived symbol -> an input's dim
        why.setdefault(a, (type(node.op).__name__, node.site))
        count += 1
    if count:
        for key in [k for k in cache if k not in (SUBST, WHY)]:
            del cache[key]
    return count


def symbolic_shape(var: Variable, cache: dict) -> tuple:
    """The symbolic shape of ``var`` (memoized in ``cache`` by variable id)."""
    hit = cache.get(id(var))
    if hit is not None and hit[0] is var:
        return hit[1]
    stack = [var]
    while stack:
        v = stack[-1]
        hit = cache.get(id(v))
        if hit is not None and hit[0] is v:
            stack.pop()
            continue
        deps = _dependencies(v)
        missing = [d for d in deps if not (id(d) in cache and cache[id(d)][0] is d)]
        if missing:
            stack.extend(missing)
            continue
        shape = _infer(v, cache)
        if len(shape) != v.ndim:
            shape = tuple(("v", v, k) for k in range(v.ndim))
        subst = cache.get(SUBST)
        if subst:
            shape = tuple(_resolve(subst, d) for d in shape)
        shape = tuple(s if s is not None else d for s, d in zip(v.type.shape, shape))
        cache[id(v)] = (v, shape)
        stack.pop()
    return cache[id(var)][1]


def _shape(v: Variable, cache: dict) -> tuple:
    return cache[id(v)][1]


def value_of(v: Variable, cache: dict):
    """A symbol for the value of an int scalar: an int, a dim symbol, or ("val", v)."""
    if isinstance(v, Constant) and v.ndim == 0:
        return int(v.value)
    node = v.owner
    if node is not None:
        name = type(node.op).__name__
        if name == "ShapeOf":
            return symbolic_shape(node.inputs[0], cache)[node.op.axis]
        if name == "Elemwise" and node.op.scalar_op in ("cast", "identity"):
            return value_of(node.inputs[0], cache)
    return ("val", v)


def _resolve(subst: dict, d):
    if isinstance(d, int):
        return d
    if d[0] == "max":
        return broadcast(*[(_resolve(subst, e),) for e in d[1]])[0]
    return _find(subst, d)


def _inferred_dim(total: tuple, others: list):
    """The dim a reshape's -1 stands for: prod(total) / prod(others), cancelling symbols."""
    num = [d for d in total if not isinstance(d, int)]
    q_num = 1
    for d in total:
        if isinstance(d, int):
            q_num *= d
    q_den = 1
    for d in others:
        if isinstance(d, int):
            q_den *= d
        elif d in num:
            num.remove(d)
        else:
            return None
    if q_den == 0 or q_num % q_den:
        return None
    q = q_num // q_den
    if not num:
        return q
    return num[0] if len(num) == 1 and q == 1 else None


def _dependencies(v: Variable) -> list[Variable]:
    node = v.owner
    if node is None:
        return []
    name = type(node.op).__name__
    deps = list(node.inputs)
    if name in ("Reshape", "Alloc", "Arange") or name.endswith(("GradInput", "GradWeight")) or name == "RandomVariable":
        for s in node.inputs:
            if s.owner is not None and type(s.owner.op).__name__ in ("ShapeOf", "Shape"):
                deps.append(s.owner.inputs[0])
    return deps


_SAME_AS_INPUT = {  # op class name -> the input whose shape the (first) output has
    "StopGradient": 0, "IncSubtensor": 0, "AdvancedIncSubtensor": 0, "Softmax": 0, "LogSoftmax": 0,
    "LCN": 0, "LCNGrad": 0, "Pool2dGrad": 0, "SumToShape": 1,
}


def _infer(v: Variable, cache: dict) -> tuple:
    node = v.owner
    if node is None:
        return tuple(d if d is not None else ("in", v, k) for k, d in enumerate(v.type.shape))
    op, ins = node.op, node.inputs
    name = type(op).__name__
    generic = tuple(("v", v, k) for k in range(v.ndim))
    if name in ("Elemwise", "BroadcastLike"):
        return broadcast(*[_shape(i, cache) for i in ins])
    if name == "FusedElemwise":
        from engine.ops.fused import expr_inputs

        slots = expr_inputs(op.expr, op.outputs[v.index])
        return broadcast(*[_shape(ins[k], cache) for k in sorted(slots)])
    if name in _SAME_AS_INPUT and v.index == 0 and ins[_SAME_AS_INPUT[name]].ndim == v.ndim:
        return _shape(ins[_SAME_AS_INPUT[name]], cache)
    if name == "DimShuffle":
        x = _shape(ins[0], cache)
        return tuple(1 if a == "x" else x[a] for a in op.new_order)
    if name in ("Reduce", "FusedReduce"):
        x = broadcast(*[_shape(i, cache) for i in ins]) if name == "FusedReduce" else _shape(ins[0], cache)
        return tuple(d for i, d in enumerate(x) if i not in op.axes)
    if name == "Argmax":
        return tuple(d for i, d in enumerate(_shape(ins[0], cache)) if i != op.axis)
    if name == "MatMul":
        a, b = _shape(ins[0], cache), _shape(ins[1], cache)
        return broadcast(a[:-2], b[:-2]) + (a[-2], b[-1])
    if name == "Gemm" or (name == "GemmBernoulli" and v.index != 1):
        a, b = _shape(ins[0], cache), _shape(ins[1], cache)
        gemm = op if name == "Gemm" else op.gemm
        return (a[1] if gemm.trans_a else a[0], b[0] if gemm.trans_b else b[1])
    if name == "GemmBernoulli":
        return _shape(ins[-1], cache)
    if name == "Reshape":
        sizes = iter(ins[1:])
        out = []
        for k, p in enumerate(op.pattern):
            if p is None:
                val = value_of(next(sizes), cache)
                out.append(val if not (isinstance(val, tuple) and val[0] == "val") else ("v", v, k))
            elif p == -1:
                out.append(None)  # resolved below

            else:
                out.append(p)
        if None in out:
            k = out.index(None)
            out[k] = _inferred_dim(_shape(ins[0], cache), out[:k] + out[k + 1:]) or ("v", v, k)
        return tuple(out)
    if name == "Arange":
        start, stop, step = ins
        if isinstance(start, Constant) and int(start.value) == 0 and isinstance(step, Constant) \
                and int(step.value) == 1:
            val = value_of(stop, cache)
            if not (isinstance(val, tuple) and val[0] == "val"):
                return (val,)
        return generic
    if name == "Alloc":
        sizes = iter(ins[1:])
        out = []
        for k, p in enumerate(op.pattern):
            val = value_of(next(sizes), cache) if p is None else p
            out.append(val if not (isinstance(val, tuple) and val[0] == "val") else ("v", v, k))
        return tuple(out)
    if name == "Subtensor":
        x = _shape(ins[0], cache)
        out = []
        for axis, d in enumerate(x):
            entry = op.spec[axis] if axis < len(op.spec) else ("slice", None, None, None)
            if entry[0] == "index":
                continue
            out.append(d if entry[1:] == (None, None, None) else ("v", v, len(out)))
        return tuple(out) if len(out) == v.ndim else generic
    if name == "AdvancedSubtensor":
        x = _shape(ins[0], cache)
        return broadcast(*[_shape(i, cache) for i in ins[1:]]) + x[len(ins) - 1:]
    if name == "RandomVariable" and v.index == 1:
        size = ins[1]
        if size.owner is not None and type(size.owner.op).__name__ == "Shape":
            return _shape(size.owner.inputs[0], cache)
        return generic
    if name == "RandomVariable":
        return _shape(ins[0], cache)
    if name == "SoftmaxCrossEntropy":
        # rows of logits == labels (checked at run time); the labels' dim names it
        return _shape(ins[1], cache)
    if name.endswith(("GradInput", "GradWeight")):
        s = ins[-1]
        if s.owner is not None and type(s.owner.op).__name__ == "Shape" and s.owner.inputs[0].ndim == v.ndim:
            return _shape(s.owner.inputs[0], cache)
        if s.ndim == v.ndim:
            return _shape(s, cache)
        return generic
    if name in ("Conv2d", "FusedConv"):
        x, w = _shape(ins[0], cache), _shape(ins[1], cache)
        return (x[0], w[0], ("v", v, 2), ("v", v, 3))
    if name in ("Pool2d", "FusedPool"):
        x = _shape(ins[0], cache)
        return x[:-2] + (("v", v, v.ndim - 2), ("v", v, v.ndim - 1))
    return generic
