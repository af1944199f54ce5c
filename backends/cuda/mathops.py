"""Scalar arithmetic for the CUDA renderer: C types, literals, operators and the ``kiln_*``
helper functions (emitted per dtype, only when used). Tables, not if-chains, map kernel-IR ops
to C; semantics are kernel_ir's (see render.py's docstring)."""

from __future__ import annotations

import math

import numpy as np

from engine import kernel_ir as ir

CTYPE = {"bool": "bool", "int8": "signed char", "int16": "short", "int32": "int",
         "int64": "long long", "uint8": "unsigned char", "uint16": "unsigned short",
         "uint32": "unsigned int", "uint64": "unsigned long long", "float32": "float",
         "float64": "double"}
UNSIGNED = {"int8": "unsigned char", "int16": "unsigned short", "int32": "unsigned int",
            "int64": "unsigned long long", "uint8": "unsigned char",
            "uint16": "unsigned short", "uint32": "unsigned int",
            "uint64": "unsigned long long", "bool": "unsigned char"}
TAG = {"bool": "b", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8",
       "uint16": "u16", "uint32": "u32", "uint64": "u64", "float32": "f32", "float64": "f64"}
INFIX = {"add": "+", "sub": "-", "mul": "*", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
         "eq": "==", "ne": "!=", "and": "&", "or": "|", "xor": "^"}
#: float math: kernel-IR unary op -> C function for float64 (float32 appends "f")
FLOAT_FN = {"exp": "exp", "exp2": "exp2", "expm1": "expm1", "log": "log", "log2": "log2",
            "log1p": "log1p", "sqrt": "sqrt", "tanh": "tanh", "floor": "floor", "ceil": "ceil",
            "trunc": "trunc", "rint": "rint", "sin": "sin", "cos": "cos", "abs": "fabs"}
MULHI = {"uint32": "__umulhi", "int32": "__mulhi", "uint64": "__umul64hi",
         "int64": "__mul64hi"}


def strip(text):
    """text without one pair of parentheses enclosing all of it."""
    if not (text.startswith("(") and text.endswith(")")):
        return text
    depth = 0
    for k, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and k < len(text) - 1:
            return text
    return text[1:-1]


def literal(value, dtype):
    if dtype == "bool":
        return "true" if value else "false"
    if dtype == "float32":
        v = float(np.float32(value))
        if math.isnan(v):
            return "__int_as_float(0x7fc00000)"
        if math.isinf(v):
            return "__int_as_float(0x7f800000)" if v > 0 else "__int_as_float((int)0xff800000u)"
        text = repr(v) + "f"
        return f"({text})" if v < 0 or text.startswith("-") else text
    if dtype == "float64":
        v = float(value)
        if math.isnan(v):
            return "__longlong_as_double(0x7ff8000000000000LL)"
        if math.isinf(v):
            return "__longlong_as_double(0x7ff0000000000000LL)" if v > 0 else \
                "__longlong_as_double((long long)0xfff0000000000000ULL)"
        text = repr(v)
        return f"({text})" if text.startswith("-") else text
    v = int(value)
    info = np.iinfo(dtype)
    if dtype == "int64":
        if v == info.min:
            return "(-9223372036854775807LL - 1LL)"
        return f"({v}LL)" if v < 0 else f"{v}LL"
    if dtype == "uint64":
        return f"{v}ULL"
    if dtype == "int32":
        if v == info.min:
            return "(-2147483647 - 1)"
        return f"({v})" if v < 0 else str(v)
    if dtype == "uint32":
        return f"{v}u"
    return f"(({CTYPE[dtype]}){v})"


def zero(dtype):
    return literal(0, dtype)


# ----------------------------------------------------------------------------- helpers

class Helpers:
    """The ``kiln_*`` device functions a translation unit uses."""

    def __init__(self):
        self.used = {}

    def use(self, kind, dtype):
        name = f"kiln_{kind}_{TAG[dtype]}"
        if name not in self.used:
            self.used[name] = _HELPERS[kind](name, dtype)
        return name

    def text(self):
        if not self.used:
            return ""
        return "\n".join(self.used[n] for n in sorted(self.used)) + "\n"


def _head(name, dtype, args="a, b"):
    t = CTYPE[dtype]
    params = ", ".join(f"{t} {a.strip()}" for a in args.split(","))
    return f"__device__ __forceinline__ {t} {name}({params})"


def _h_div(name, dt):
    t, u = CTYPE[dt], UNSIGNED.get(dt)
    if ir.is_float(dt):
        return f"{_head(name, dt)} {{ return a / b; }}"
    if ir.is_signed(dt):
        return (f"{_head(name, dt)} {{\n  return b == 0 ? ({t})0 : b == ({t})-1 ? "
                f"({t})(0 - ({u})a) : ({t})(a / b);\n}}")
    return f"{_head(name, dt)} {{ return b == 0 ? ({t})0 : ({t})(a / b); }}"


def _h_floordiv(name, dt):
    t, u = CTYPE[dt], UNSIGNED.get(dt)
    if ir.is_float(dt):
        f = "f" if dt == "float32" else ""
        z, one, half = ("0.0f", "1.0f", "0.5f") if f else ("0.0", "1.0", "0.5")
        return (f"{_head(name, dt)} {{  // numpy's npy_divmod\n"
                f"  {t} mod = fmod{f}(a, b);\n"
                f"  if (b == {z}) return a / b;\n"
                f"  {t} div = (a - mod) / b;\n"
                f"  if (mod != {z} && ((b < {z}) != (mod < {z}))) div -= {one};\n"
                f"  if (div == {z}) return copysign{f}({z}, a / b);\n"
                f"  {t} fl = floor{f}(div);\n"
                f"  return div - fl > {half} ? fl + {one} : fl;\n}}")
    if ir.is_signed(dt):
        return (f"{_head(name, dt)} {{\n"
                f"  if (b == 0) return 0;\n"
                f"  if (b == ({t})-1) return ({t})(0 - ({u})a);\n"
                f"  {t} q = ({t})(a / b), r = ({t})(a % b);\n"
                f"  return (r != 0 && ((r < 0) != (b < 0))) ? ({t})(q - 1) : q;\n}}")
    return f"{_head(name, dt)} {{ return b == 0 ? ({t})0 : ({t})(a / b); }}"


def _h_mod(name, dt):
    t = CTYPE[dt]
    if ir.is_float(dt):
        f = "f" if dt == "float32" else ""
        z = "0.0f" if f else "0.0"
        return (f"{_head(name, dt)} {{  // numpy's npy_divmod\n"
                f"  {t} mod = fmod{f}(a, b);\n"
                f"  if (b == {z}) return mod;\n"
                f"  if (mod == {z}) return copysign{f}({z}, b);\n"
                f"  return ((b < {z}) != (mod < {z})) ? mod + b : mod;\n}}")
    if ir.is_signed(dt):
        return (f"{_head(name, dt)} {{\n"
                f"  if (b == 0 || b == ({t})-1) return 0;\n"
                f"  {t} r = ({t})(a % b);\n"
                f"  return (r != 0 && ((r < 0) != (b < 0))) ? ({t})(r + b) : r;\n}}")
    return f"{_head(name, dt)} {{ return b == 0 ? ({t})0 : ({t})(a % b); }}"


def _h_minmax(which):
    def make(name, dt):
        if ir.is_float(dt):
            f = "fminf" if dt == "float32" else "fmin"
            if which == "max":
                f = f.replace("min", "max")
            return f"{_head(name, dt)} {{ return (a != a || b != b) ? a + b : {f}(a, b); }}"
        cmp = "<" if which == "min" else ">"
        return f"{_head(name, dt)} {{ return a {cmp} b ? a : b; }}"
    return make


def _h_shl(name, dt):
    t, u, n = CTYPE[dt], UNSIGNED[dt], ir.bits(dt)
    return (f"{_head(name, dt)} {{\n  return (unsigned long long)({u})b >= {n} ? ({t})0 : "
            f"({t})(({u})a << ({u})b);\n}}")


def _h_shr(name, dt):
    t, u, n = CTYPE[dt], UNSIGNED[dt], ir.bits(dt)
    if ir.is_signed(dt):
        return (f"{_head(name, dt)} {{\n  return ({t})(a >> ((unsigned long long)({u})b >= {n}"
                f" ? {n - 1} : b));\n}}")
    return (f"{_head(name, dt)} {{\n  return (unsigned long long)b >= {n} ? ({t})0 : "
            f"({t})(a >> b);\n}}")


def _h_abs(name, dt):
    t, u = CTYPE[dt], UNSIGNED.get(dt)
    return f"{_head(name, dt, 'a')} {{ return a < 0 ? ({t})(0 - ({u})a) : a; }}"


def _h_mulhi(name, dt):
    t, n = CTYPE[dt], ir.bits(dt)
    w = "int" if ir.is_signed(dt) else "unsigned int"
    return f"{_head(name, dt)} {{ return ({t})((({w})a * ({w})b) >> {n}); }}"


def _h_sigmoid(name, dt):
    t = CTYPE[dt]
    f, one, z = ("f", "1.0f", "0.0f") if dt == "float32" else ("", "1.0", "0.0")
    return (f"{_head(name, dt, 'x')} {{  // stable for all x\n"
            f"  {t} e = exp{f}(-fabs{f}(x));\n"
            f"  {t} s = {one} / ({one} + e);\n"
            f"  return x >= {z} ? s : e * s;\n}}")


_HELPERS = {"div": _h_div, "floordiv": _h_floordiv, "mod": _h_mod, "min": _h_minmax("min"),
            "max": _h_minmax("max"), "shl": _h_shl, "shr": _h_shr, "abs": _h_abs,
            "mulhi": _h_mulhi, "sigmoid": _h_sigmoid}


# ----------------------------------------------------------------------------- operators

def _arith(h, op, a, b, dt):
    sym = INFIX[op]
    t = CTYPE[dt]
    if ir.is_float(dt) or dt in ("int64", "uint32", "uint64"):
        return f"({a} {sym} {b})"
    if dt == "int32":
        return f"((int)((unsigned int){a} {sym} (unsigned int){b}))"
    if dt == "uint16" and op == "mul":
        return f"(({t})((unsigned int){a} * (unsigned int){b}))"
    return f"(({t})({a} {sym} {b}))"


def _helper(kind):
    return lambda h, op, a, b, dt: f"{h.use(kind, dt)}({strip(a)}, {strip(b)})"


def _div(h, op, a, b, dt):
    if ir.is_float(dt):
        return f"({a} / {b})"
    return f"{h.use('div', dt)}({strip(a)}, {strip(b)})"


def _pow(h, op, a, b, dt):
    return f"{'powf' if dt == 'float32' else 'pow'}({strip(a)}, {strip(b)})"


def _mulhi(h, op, a, b, dt):
    if dt in MULHI:
        return f"{MULHI[dt]}({strip(a)}, {strip(b)})"
    return f"{h.use('mulhi', dt)}({strip(a)}, {strip(b)})"


def _compare(h, op, a, b, dt):
    return f"({a} {INFIX[op]} {b})"


def _bitwise(h, op, a, b, dt):
    if dt == "bool":
        return f"(({a} {INFIX[op]} {b}) != 0)"
    if dt in ("int32", "int64", "uint32", "uint64"):
        return f"({a} {INFIX[op]} {b})"
    return f"(({CTYPE[dt]})({a} {INFIX[op]} {b}))"


BINARY = {"add": _arith, "sub": _arith, "mul": _arith, "div": _div,
          "floordiv": _helper("floordiv"), "mod": _helper("mod"), "min": _helper("min"),
          "max": _helper("max"), "pow": _pow, "mulhi": _mulhi,
          **{op: _compare for op in ir.COMPARE_OPS},
          "and": _bitwise, "or": _bitwise, "xor": _bitwise,
          "shl": _helper("shl"), "shr": _helper("shr")}


def binary(h, op, a, b, dt):
    return BINARY[op](h, op, a, b, dt)


def _neg(h, op, a, dt):
    if ir.is_float(dt):
        return f"(-{a})"
    return f"(({CTYPE[dt]})(0 - ({UNSIGNED[dt]}){a}))"


def _abs(h, op, a, dt):
    if ir.is_float(dt):
        return f"{'fabsf' if dt == 'float32' else 'fabs'}({strip(a)})"
    if not ir.is_signed(dt):
        return a
    return f"{h.use('abs', dt)}({strip(a)})"


def _not(h, op, a, dt):
    return f"(!{a})" if dt == "bool" else f"(({CTYPE[dt]})~{a})"


def _float_fn(h, op, a, dt):
    fn = FLOAT_FN[op] + ("f" if dt == "float32" else "")
    return f"{fn}({strip(a)})"


def _sigmoid(h, op, a, dt):
    return f"{h.use('sigmoid', dt)}({strip(a)})"


UNARY = {"neg": _neg, "abs": _abs, "not": _not, "sigmoid": _sigmoid,
         **{op: _float_fn for op in ir.FLOAT_UNARY_OPS if op != "sigmoid"}}
assert set(BINARY) == set(ir.BINARY_OPS) and set(UNARY) == set(ir.UNARY_OPS)


def unary(h, op, a, dt):
    return UNARY[op](h, op, a, dt)


def cast(a, src, dst):
    if src == dst:
        return a
    if dst == "bool":
        return f"({a} != {zero(src)})"
    return f"(({CTYPE[dst]}){a})"
