"""Lowering rules: graph ops -> kernel IR, registered in ``engine.lower.LOWERINGS``.

* ``common.py``  helpers shared by every rule module (broadcast indexing, scalar-op IR from
  ``SCALAR_OPS`` names, fused-expression evaluation, reductions, Philox, host-side checks) and
  the small extensions of the lowering contract the LLVM backend understands.
* ``core.py``    elementwise, reductions, argmax, matmul, shapes, indexing, arange, random.
* ``fused.py``   the optimizer's FusedElemwise, FusedReduce and Gemm.
* ``nn.py``      conv, pooling, LCN, softmax & co (another module, same contract).

``engine.lower.lower(node)`` imports these modules on first use.
"""
