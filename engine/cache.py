"""Kiln's on-disk compile cache: raw bytes + JSON metadata by key, per namespace. No pickle.

    cache = DiskCache("llvm-kernels")            # $KILN_CACHE_DIR or ~/.cache/kiln, /llvm-kernels
    key = cache_key("kernel listing ...", triple, cpu, versions...)   # sha256 hex
    hit = cache.get(key)                          # None, or (data bytes, metadata dict)
    cache.put(key, data, {"name": "saxpy"})       # -> True if stored

An entry is two files in ``<root>/<namespace>/``: ``<key>.bin`` (the bytes) and ``<key>.json``
(``{"format", "sha256", "size", "meta"}``). ``get`` verifies the size and sha256 of the
bytes; a mismatched, truncated or unreadable entry is a miss (reported on ``KILN_DEBUG=cache``)
that the caller recompiles and ``put``s again. Writes go to a temporary file in the same
directory and are renamed into place (``os.replace``), the bytes before the metadata, so
concurrent processes never read a half-written entry.

Safety: the root and namespace directories are created mode 0700 (tightened if looser); a
directory owned by another user is refused, and an unusable directory (not creatable, not
writable) turns the cache off with a ``CacheWarning`` — compiling still works.
Three levels use this class, each in its own namespace: the optimized graphs of
engine/graph_cache.py (a warm ``engine.function`` runs no rewrite pass), the function entries of
engine/function_cache.py (which kernels a function has and their keys: no LLVM) and the kernels'
object code (backends/llvm/runtime.py; the CUDA backend's PTX likewise).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import tempfile
import warnings

FORMAT = 1
_KEY = re.compile(r"^[0-9a-f]{16,128}$")


class CacheWarning(UserWarning):
    """The compile cache is unusable and was turned off."""


def cache_root():
    """``$KILN_CACHE_DIR``, else ``~/.cache/kiln``."""
    return os.environ.get("KILN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "kiln")


def cache_key(*parts):
    """sha256 hex of the parts (str, bytes or anything str()-able), each length-prefixed."""
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


_SOURCES_SHA256: dict = {}


def sources_sha256(*paths: str) -> str:
    """sha256 over Kiln source files, given relative to the repository root (a directory stands
    for its .py files): part of every compile-cache key, so an edited code generator never
    serves stale code. Memoized per path tuple (sources do not change under a running process)."""
    if paths not in _SOURCES_SHA256:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        h = hashlib.sha256()
        for rel in paths:
            path = os.path.join(root, rel)
            files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".py")) \
                if os.path.isdir(path) else [path]
            for f in files:
                try:
                    with open(f, "rb") as fh:
                        data = fh.read()
                except OSError:
                    data = b""
                h.update(os.path.relpath(f, root).encode() + b"\0" + hashlib.sha256(data).digest())
        _SOURCES_SHA256[paths] = h.hexdigest()
    return _SOURCES_SHA256[paths]


def kiln_version():
    engine = sys.modules.get("engine")
    return str(getattr(engine, "__version__", "0+unknown"))


def _debug(message):
    from engine.debug import debug_log
    debug_log("cache", message)


def _secure_dir(path):
    """Create path (mode 0700) if needed; refuse another user's; tighten loose modes."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise PermissionError(f"{path} is owned by uid {st.st_uid}, not by this user "
                              f"(uid {os.getuid()})")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _write_atomic(directory, name, data):
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class DiskCache:
    """Bytes + JSON metadata by key under ``<root>/<namespace>``; see the module docstring."""

    def __init__(self, namespace, root=None):
        if not re.match(r"^[A-Za-z0-9_.-]+$", namespace):
            raise ValueError(f"bad cache namespace {namespace!r}")
        self.namespace = namespace
        self.root = root or cache_root()
        self.path = None
        self.reason = None
        try:
            _secure_dir(self.root)
            path = os.path.join(self.root, namespace)
            _secure_dir(path)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            self.path = path
        except OSError as e:
            self.disable(f"cannot use the cache directory {self.root!r} ({e})")

    @property
    def enabled(self):
        return self.path is not None

    def disable(self, why):
        self.path, self.reason = None, why
        warnings.warn(f"kiln: {why}; compiling without a cache", CacheWarning, stacklevel=3)

    def _files(self, key):
        if not _KEY.match(key):
            raise ValueError(f"bad cache key {key!r} (expected lowercase hex)")
        return os.path.join(self.path, key + ".bin"), os.path.join(self.path, key + ".json")

    def get(self, key):
        """(data, metadata) for key, or None on a miss or a bad entry."""
        if self.path is None:
            return None
        bin_path, json_path = self._files(key)
        try:
            with open(json_path, "rb") as f:
                info = json.loads(f.read())
            with open(bin_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            _debug(f"{self.namespace}/{key[:16]}: unreadable entry ({e}); recompiling")
            return None
        problem = None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            problem = "unknown metadata format"
        elif info.get("size") != len(data):
            problem = f"truncated: {len(data)} bytes, expected {info.get('size')}"
        elif info.get("sha256") != hashlib.sha256(data).hexdigest():
            problem = "sha256 mismatch"
        if problem:
            _debug(f"{self.namespace}/{key[:16]}: corrupt entry ({problem}); recompiling")
            return None
        return data, info.get("meta", {})

    def put(self, key, data, meta=None):
        """Store data (bytes) and meta (a JSON-able dict) under key; True if stored."""
        if self.path is None:
            return False
        bin_path, json_path = self._files(key)
        info = {"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                "meta": meta or {}}
        try:
            _write_atomic(self.path, os.path.basename(bin_path), bytes(data))
            _write_atomic(self.path, os.path.basename(json_path),
                          json.dumps(info, sort_keys=True).encode())
        except OSError as e:
            self.disable(f"cannot write to the cache directory {self.path!r} ({e})")
            return False
        return True


_CACHES = {}


def get_cache(namespace):
    """The DiskCache for namespace under the current cache_root() (one per root)."""
    key = (namespace, cache_root())
    c = _CACHES.get(key)
    if c is None:
        c = _CACHES[key] = DiskCache(namespace, key[1])
    return c
