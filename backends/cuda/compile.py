"""CUDA C -> cubin (and PTX, for reading) with nvcc, cached on disk (engine/cache.py).

    ptx = compile_ptx(source, "sm_90")        # text; nvcc -ptx (for reading: source("ptx"))
    cubin = compile_cubin(source, "sm_80")    # bytes; nvcc -cubin (what the runtime loads)
    ptx_entry(ptx, "E_add_f32_2d")            # one kernel's .entry (with the PTX header)

Both are entries of the kernel-level disk cache, namespace "cuda-kernels", keyed like the LLVM
object code: sha256 of the translation unit's text, the kind (ptx / cubin), the arch, the
nvcc version, Kiln's version, a hash of the renderer's sources and the flags. ``get``
verifies size and sha256; a corrupt entry is recompiled, never trusted. ``STATS`` counts
compiles and hits. ``KILN_DEBUG=cuda`` prints each translation unit as it is compiled.

Flags: ``-fmad=false`` (no contraction of a*b+c: the same rounding as the LLVM backend and
numpy; explicit ``fma`` nodes still use ``fmaf``), otherwise nvcc's IEEE defaults
(``-prec-div=true -prec-sqrt=true -ftz=false``). ``NvccMissing`` when nvcc is not found
($KILN_NVCC, $CUDA_HOME/bin, PATH, /usr/local/cuda/bin).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from engine.cache import cache_key, get_cache, kiln_version, sources_sha256
from engine.debug import debug_enabled, debug_log
from engine.errors import KilnError

ABI_VERSION = "1"
CACHE_NAMESPACE = "cuda-kernels"
DEFAULT_ARCH = "sm_90"
FLAGS = ("-fmad=false",)
STATS = {"nvcc": 0, "cache_hits": 0, "seconds": 0.0}
_LOCK = threading.Lock()
_STATE = {}


class NvccMissing(KilnError, RuntimeError):
    """nvcc (the CUDA toolkit) is not installed or not found."""


class NvccError(KilnError, RuntimeError):
    """nvcc rejected a generated translation unit."""


def find_nvcc():
    """The nvcc executable, or None."""
    cands = [os.environ.get("KILN_NVCC")]
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        cands.append(os.path.join(home, "bin", "nvcc"))
    cands += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _tool(name):
    nvcc = find_nvcc()
    if nvcc is None:
        raise NvccMissing("the CUDA backend needs nvcc (the CUDA toolkit) to compile kernels; "
                          "none found ($KILN_NVCC, $CUDA_HOME/bin, PATH, /usr/local/cuda/bin)")
    return nvcc


def nvcc_version():
    if "version" not in _STATE:
        out = subprocess.run([_tool("nvcc"), "--version"], capture_output=True, text=True).stdout
        m = re.search(r"release [\d.]+, V([\d.]+)", out)
        _STATE["version"] = m.group(1) if m else out.strip().splitlines()[-1:]
    return str(_STATE["version"])


def renderer_hash():
    """sha256 of the sources that make CUDA C: an edited renderer never serves stale code."""
    return sources_sha256("backends/common.py", "backends/cuda/render.py", "backends/cuda/mathops.py",
                          "backends/cuda/compile.py")


def _key(kind, source, arch):
    return cache_key("kiln-cuda", ABI_VERSION, kind, source, arch, nvcc_version(), kiln_version(),
                     renderer_hash(), " ".join(FLAGS))


def _run(cmd, what, source):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    STATS["seconds"] += time.perf_counter() - t0
    if r.returncode != 0:
        lines = source.splitlines()
        ctx = []
        for m in re.finditer(r"\((\d+)\)", r.stderr):
            n = int(m.group(1))
            if 0 < n <= len(lines):
                ctx.append(f"  {n:5d} | {lines[n - 1]}")
            if len(ctx) >= 5:
                break
        raise NvccError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{r.stderr.strip()[:4000]}"
                        + ("\n" + "\n".join(ctx) if ctx else ""))
    return r


def _nvcc(kind, source, arch, cache):
    """``nvcc -<kind>`` of a translation unit (kind "ptx" or "cubin"): the output's bytes, from
    the cache when an entry is there (verified by engine/cache.py), else compiled and stored."""
    key = _key(kind, source, arch)
    disk = get_cache(CACHE_NAMESPACE) if cache else None
    hit = disk.get(key) if disk is not None else None
    if hit is not None:
        STATS["cache_hits"] += 1
        debug_log("cache", f"hit cuda {kind} {arch} {key[:16]}")
        return hit[0]
    if debug_enabled("cuda"):
        debug_log("cuda", f"translation unit ({arch})\n{source}")
    with _LOCK, tempfile.TemporaryDirectory(prefix="kiln-cuda-") as d:
        src, out = os.path.join(d, "kiln.cu"), os.path.join(d, f"kiln.{kind}")
        with open(src, "w") as f:
            f.write(source)
        _run([_tool("nvcc"), f"-arch={arch}", f"-{kind}", *FLAGS, "-o", out, src], "nvcc", source)
        STATS["nvcc"] += 1
        with open(out, "rb") as f:
            data = f.read()
    if disk is not None:
        disk.put(key, data, {"kind": kind, "arch": arch})
    return data


def compile_ptx(source, arch=DEFAULT_ARCH, cache=True):
    """PTX text of a translation unit for arch (e.g. "sm_90")."""
    return _nvcc("ptx", source, arch, cache).decode()


def compile_cubin(source, arch=DEFAULT_ARCH, cache=True):
    """cubin bytes of a translation unit for arch (``nvcc -cubin``: one process)."""
    return _nvcc("cubin", source, arch, cache)


def ptx_entry(ptx, name):
    """The PTX header and the ``.entry`` of one kernel."""
    head = [ln for ln in ptx.splitlines() if ln.startswith((".version", ".target", ".address_size"))]
    m = re.search(r"^\.visible \.entry " + re.escape(name) + r"\(", ptx, re.M)
    if m is None:
        return ptx
    end = re.search(r"^}\s*$", ptx[m.start():], re.M)
    body = ptx[m.start():m.start() + (end.end() if end else len(ptx))]
    return "\n".join(head) + "\n\n" + body + "\n"
