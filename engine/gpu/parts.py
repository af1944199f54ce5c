"""``split_parts``: top-level statements that depend on each other through memory go to
separate launches (blocks of one launch never wait for each other)."""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.exprs import _assigned, _global_writes, _reads
from engine.kernel_ir import Alloc, Declare, Store


def _top_groups(body):
    """Top-level statements as groups that must stay together: the span from the first to the
    last statement touching a mutable top-level local (declared at the top, assigned
    anywhere) or a top-level Alloc, grown until no Declare inside a span is read after it."""
    body = tuple(body)

    def refs(s, name):
        return (name in ir.free_vars(s) or name in _assigned(s) or
                isinstance(s, Declare) and s.var.name == name or
                isinstance(s, Alloc) and s.buf.name == name or
                any(isinstance(n, (ir.Load, Store)) and n.buf.name == name for n in ir.walk(s)))
    decl = {s.var.name for s in body if isinstance(s, Declare)}
    keys = ({n for n in _assigned(body) if n in decl} |
            {s.buf.name for s in body if isinstance(s, Alloc)})
    spans = []
    for name in sorted(keys):
        idx = [k for k, s in enumerate(body) if refs(s, name)]
        spans.append([min(idx), max(idx)])
    changed = True
    while changed:
        changed = False
        spans.sort()
        merged = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        spans = merged
        for sp in spans:
            for k in range(sp[0], sp[1] + 1):
                s = body[k]
                if isinstance(s, Declare):
                    later = [j for j in range(sp[1] + 1, len(body)) if refs(body[j], s.var.name)]
                    if later:
                        sp[1] = max(later)
                        changed = True
    groups, k = [], 0
    starts = {lo: hi for lo, hi in spans}
    while k < len(body):
        if k in starts:
            groups.append(list(body[k:starts[k] + 1]))
            k = starts[k] + 1
        else:
            groups.append([body[k]])
            k += 1
    return groups


def split_parts(body):
    """Lists of top-level statements, each list one launch, in order (see the module
    docstring). Immutable top-level Declares are copied into every part that reads them."""
    body = tuple(body)
    groups = _top_groups(body)
    decl_of = {}
    parts, cur, cur_r, cur_w = [], [], set(), set()
    for g in groups:
        if len(g) == 1 and isinstance(g[0], Declare) and g[0].var.name not in _assigned(body):
            decl_of[g[0].var.name] = g[0]
            cur.append(g)
            cur_r |= _reads(g[0])
            continue
        r = set().union(*(_reads(s) for s in g))
        w = set().union(*(_global_writes(s) for s in g))
        if cur and ((r | w) & cur_w or w & cur_r):
            parts.append(cur)
            cur, cur_r, cur_w = [], set(), set()
        cur.append(g)
        cur_r |= r
        cur_w |= w
    if cur:
        parts.append(cur)
    out = []
    written_before = set()
    for p in parts:
        stmts = [s for g in p for s in g]
        have = {s.var.name for s in stmts if isinstance(s, Declare)}
        need = set().union(*(ir.free_vars(s) for s in stmts)) if stmts else set()
        extra, todo = [], sorted(need - have)
        while todo:
            name = todo.pop()
            d = decl_of.get(name)
            if d is None or name in have:
                continue
            if _reads(d) & written_before:
                return None  # the Declare would see a later value: cannot split
            have.add(name)
            extra.append(d)
            todo.extend(sorted(ir.free_vars(d.init) - have))
        order = {id(d): k for k, d in enumerate(body)}
        extra.sort(key=lambda d: order[id(d)])
        stmts = extra + stmts
        if any(isinstance(s, Declare) for s in stmts) and not [s for s in stmts if not
                                                              isinstance(s, Declare)]:
            continue  # only Declares: nothing to launch
        out.append(stmts)
        written_before |= set().union(*(_global_writes(s) for s in stmts)) if stmts else set()
    return out
