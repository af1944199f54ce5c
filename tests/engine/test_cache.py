"""The on-disk kernel cache: warm starts compile nothing, bad entries are recompiled,
directories are private, unusable directories fall back, concurrent writers are safe."""

import glob
import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine.cache import CacheWarning, DiskCache, cache_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import engine.kernel_ir as ir
    from backends.llvm import runtime as rt
    i = ir.Var("i")
    x, y = ir.BufferParam("x", "float32", 1), ir.BufferParam("y", "float32", 1)
    k1 = ir.Kernel("double", (x, y), ir.Loop(i, 0, y.dim(0), y.store(i, x[i] * 2.0)))
    k2 = ir.Kernel("square", (x, y), ir.Loop(i, 0, y.dim(0), y.store(i, x[i] * x[i])))
    prog = rt.compile_kernels([k1, k2])
    a = np.arange(10, dtype="float32"); b = np.zeros(10, "float32"); c = np.zeros(10, "float32")
    prog["double"](a, b); prog["square"](a, c)
    ok = bool((b == a * 2).all() and (c == a * a).all())
    print(json.dumps({"compiled": rt.STATS["compiled"], "hits": rt.STATS["cache_hits"], "ok": ok}))
""")


def run_script(tmp_path, cache_dir, debug="cache", wait=True):
    path = tmp_path / "compile_two.py"
    path.write_text(SCRIPT)
    env = dict(os.environ, KILN_CACHE_DIR=str(cache_dir), KILN_LLVM_OPT="0", KILN_DEBUG=debug,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(path)], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return finish(proc) if wait else proc


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def test_cold_then_warm_start_in_separate_processes(tmp_path):
    cache_dir = tmp_path / "cache"
    cold, err = run_script(tmp_path, cache_dir)
    assert cold == {"compiled": 2, "hits": 0, "ok": True}
    assert "miss double" in err and "stored" in err
    warm, err = run_script(tmp_path, cache_dir)
    assert warm == {"compiled": 0, "hits": 2, "ok": True}
    assert "hit double" in err and "hit square" in err
    for d in (cache_dir, cache_dir / "llvm-kernels"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert len(glob.glob(str(cache_dir / "llvm-kernels" / "*.bin"))) == 2


def compile_in_process(monkeypatch, cache_dir):
    import engine.kernel_ir as ir
    from backends.llvm import runtime as rt

    monkeypatch.setenv("KILN_CACHE_DIR", str(cache_dir))
    i = ir.Var("i")
    x = ir.BufferParam("x", "int32", 1)
    k = ir.Kernel("inc", (x,), ir.Loop(i, 0, x.dim(0), x.store(i, x[i] + 1)))
    before = dict(rt.STATS)
    prog = rt.compile_kernels([k], opt=0)
    v = np.arange(5, dtype="int32")
    prog["inc"](v)
    np.testing.assert_array_equal(v, np.arange(1, 6))
    return rt.STATS["compiled"] - before["compiled"], rt.STATS["cache_hits"] - before["cache_hits"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "bad_json", "missing_bin"])
def test_corrupt_entries_are_recompiled_and_rewritten(tmp_path, monkeypatch, capsys, damage):
    monkeypatch.setenv("KILN_DEBUG", "cache")
    assert compile_in_process(monkeypatch, tmp_path) == (1, 0)
    assert compile_in_process(monkeypatch, tmp_path) == (0, 1)
    (bin_path,) = glob.glob(str(tmp_path / "llvm-kernels" / "*.bin"))
    data = open(bin_path, "rb").read()
    if damage == "flip":
        open(bin_path, "wb").write(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        open(bin_path, "wb").write(data[: len(data) // 2])
    elif damage == "bad_json":
        open(bin_path[:-4] + ".json", "w").write("{not json")
    else:
        os.unlink(bin_path)
    capsys.readouterr()
    assert compile_in_process(monkeypatch, tmp_path) == (1, 0)
    if damage != "missing_bin":
        assert "recompiling" in capsys.readouterr().err
    assert open(bin_path, "rb").read() == data           # rewritten, valid again
    assert compile_in_process(monkeypatch, tmp_path) == (0, 1)


def test_generic_api_and_private_directories(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    cache = DiskCache("function-cache", str(loose))
    assert cache.enabled
    for d in (loose, loose / "function-cache"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    key = cache_key("graph", 1, b"bytes")
    assert key != cache_key("graph1", b"bytes") and len(key) == 64
    assert cache.get(key) is None
    assert cache.put(key, b"\x00object", {"schedule": [1, 2]})
    assert cache.get(key) == (b"\x00object", {"schedule": [1, 2]})
    for f in os.listdir(loose / "function-cache"):
        assert stat.S_IMODE(os.stat(loose / "function-cache" / f).st_mode) & 0o077 == 0
    with pytest.raises(ValueError, match="bad cache key"):
        cache.get("../../etc/passwd")


def test_unusable_directory_falls_back_with_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(CacheWarning, match="compiling without a cache"):
        assert compile_in_process(monkeypatch, blocker / "cache") == (1, 0)
    if os.getuid() != 0:
        ro = tmp_path / "readonly"
        ro.mkdir(mode=0o700)
        (ro / "llvm-kernels").mkdir(mode=0o500)
        with pytest.warns(CacheWarning):
            assert not DiskCache("llvm-kernels", str(ro)).enabled


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown")
def test_directory_of_another_user_is_refused(tmp_path):
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    with pytest.warns(CacheWarning, match="owned by uid 65534"):
        assert not DiskCache("llvm-kernels", str(other)).enabled


def test_concurrent_writers_all_succeed(tmp_path):
    cache_dir = tmp_path / "shared-cache"
    procs = [run_script(tmp_path, cache_dir, debug="", wait=False) for _ in range(4)]
    results = [finish(p)[0] for p in procs]
    assert all(r["ok"] and r["compiled"] + r["hits"] == 2 for r in results)
    warm, _ = run_script(tmp_path, cache_dir, debug="")
    assert warm == {"compiled": 0, "hits": 2, "ok": True}
    leftovers = [f for f in os.listdir(cache_dir / "llvm-kernels") if f.startswith(".tmp")]
    assert leftovers == []
