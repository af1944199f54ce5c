"""GPU softmax family: the row kernels of engine/lowering/nn_softmax.py, written for the binder.

The common kernels are vectorized for CPUs (8-lane partial accumulators, an unrolled tail) and
softmax stores its exponentials during the sum pass; scalarized, that pass is a reduction that
also stores, which the block-cooperative mapping refuses, so each row went to one thread. Here
the passes are scalar loops -- the max, the sum of exp(x - max), the write (recomputing
exp(x - max) / sum) -- so rows long enough (``GpuTarget.coop_min_work``) get a block each:
threads stride the row, shared-memory trees combine (engine/gpu/reduce.py); short rows keep
one thread per row. Same parameters and plans as the common rules.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import BufferParam, Const, Var
from engine.lower import In, Lowered, Out, Step


def _ops():
    from engine.ops import nnet
    return nnet


def has_gpu_softmax(node):
    nnet = _ops()
    return isinstance(node.op, (nnet.Softmax, nnet.LogSoftmax, nnet.SoftmaxCrossEntropy)) and \
        node.inputs[0].dtype in ("float32", "float64")


def _scalar(loop):
    return [loop]


def softmax_kernel(name, dtype, ndim, axis, log):
    from engine.lowering.nn_softmax import _passes, _row_index
    x, o = BufferParam("x", dtype, ndim), BufferParam("out", dtype, ndim)
    r, k3 = Var("r"), Var("k3")
    stmts, at, nrows = _row_index(x, axis, r)
    passes, m, s = _passes(x, at, x.dim(axis), dtype, _scalar)
    if log:
        ls = Var("ls", dtype)
        write = [ir.Declare(ls, ir.log(s)),
                 ir.Loop(k3, 0, x.dim(axis), [o.store(at(k3), (x[at(k3)] - m) - ls)])]
    else:
        write = [ir.Loop(k3, 0, x.dim(axis), [o.store(at(k3), ir.exp(x[at(k3)] - m) / s)])]
    loop = ir.Loop(r, 0, nrows, stmts + passes + write, kind="parallel")
    return ir.Kernel(name, (x, o), (loop,))


def xent_kernel(name, dtype, label_dtype):
    from engine.lowering.nn_softmax import _label, _passes
    x, y, o = BufferParam("x", dtype, 2), BufferParam("y", label_dtype, 1), BufferParam("out", dtype, 1)
    r = Var("r")
    passes, m, s = _passes(x, lambda k: (r, k), x.dim(1), dtype, _scalar)
    lstmts, ok, lab = _label(y, x, r, dtype)
    loss = ir.Select(ok, ir.log(s) - (x[r, lab] - m), Const(float("nan"), dtype))
    loop = ir.Loop(r, 0, x.dim(0), passes + lstmts + [o.store((r,), loss)], kind="parallel")
    return ir.Kernel(name, (x, y, o), (loop,))


def gpu_softmax_lowering(node):
    """The common plan of a softmax-family node with its kernel written for GPUs, or None."""
    if not has_gpu_softmax(node):
        return None
    from engine.lower import lower
    from engine.lowering.nn_util import dt
    nnet = _ops()
    base = lower(node)  # output shapes and their checks
    x = node.inputs[0]
    dtype = x.dtype
    if isinstance(node.op, nnet.SoftmaxCrossEntropy):
        k = xent_kernel(f"gpu_softmax_xent_{dt(dtype)}_{dt(node.inputs[1].dtype)}", dtype,
                        node.inputs[1].dtype)
        args = (In(0), In(1), Out(0))
    else:
        log = isinstance(node.op, nnet.LogSoftmax)
        axis = node.op.axis % x.ndim
        kind = "log_softmax" if log else "softmax"
        k = softmax_kernel(f"gpu_{kind}_axis{axis}_{dt(dtype)}_{x.ndim}d", dtype, x.ndim, axis, log)
        args = (In(0), Out(0))
    if len(base.steps) != 1 or len(base.steps[0].args) != len(args):
        return None
    return Lowered([k], [Step(k.name, args)], base.output_shapes)
