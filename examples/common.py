"""What the example scripts share: command line, shared datasets, the tutorials' patience-based
early stopping, progress bars, and figures (tiled filters, learning curves)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import engine

# -- command line ------------------------------------------------------------------------------


def parse_args(description: str, epochs: int, quick_epochs: int, argv: Sequence[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None,
               figures: bool = True) -> argparse.Namespace:
    """``--backend --epochs --dataset --quick --out --seed`` (+ ``extra`` options).

    ``--quick`` means the digits dataset and ``quick_epochs`` epochs unless given explicitly.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", default=None,
                        help="numpy | llvm | cuda | cuda-emulator (default: engine.config's)")
    parser.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {epochs})")
    parser.add_argument("--dataset", choices=("mnist", "digits"), default=None, help="default mnist")
    parser.add_argument("--quick", action="store_true", help="a run of under a minute (digits, few epochs)")
    parser.add_argument("--out", default=None, help="folder for figures (default: out/<script>)")
    parser.add_argument("--seed", type=int, default=1234)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.dataset is None:
        args.dataset = "digits" if args.quick else "mnist"
    if args.epochs is None:
        args.epochs = quick_epochs if args.quick else epochs
    args.backend = args.backend or engine.config.resolved_backend()
    engine.config.backend = args.backend
    script = Path(sys.argv[0]).stem or "example"
    args.out = Path(args.out or Path("out") / script)
    if figures:
        args.out.mkdir(parents=True, exist_ok=True)
    return args


def side(dataset: str) -> int:
    """Image side length: 28 for MNIST, 8 for digits."""
    return 28 if dataset == "mnist" else 8


# -- data --------------------------------------------------------------------------------------


def shared_dataset(x: np.ndarray, y: np.ndarray | None = None) -> Any:
    """Copy a split into shared variables (on the device for device backends)."""
    shared_x = engine.shared(np.asarray(x, dtype=engine.config.floatX), name="data_x")
    if y is None:
        return shared_x
    return shared_x, engine.shared(np.asarray(y, dtype="int64"), name="data_y")


def load_shared(name: str) -> tuple[list, tuple]:
    """``([(train_x, train_y), (valid_x, valid_y), (test_x, test_y)] as shared variables, raw arrays)``."""
    from examples.datasets import load_dataset

    raw = load_dataset(name)
    return [shared_dataset(x, y) for x, y in raw], raw


def n_batches(shared_x: Any, batch_size: int) -> int:
    return shared_x.get_value(borrow=True).shape[0] // batch_size


def progress(iterable: Any, **kwargs: Any) -> Any:
    """tqdm when installed (silent when stderr is not a terminal unless KILN_PROGRESS=1)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    disable = not (sys.stderr.isatty() or os.environ.get("KILN_PROGRESS") == "1")
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)


# -- training loops ----------------------------------------------------------------------------


def early_stopping(train_fn: Callable[[int], Any], n_train_batches: int, validate: Callable[[], Sequence[float]],
                   test: Callable[[], Sequence[float]], n_epochs: int, patience: int = 5000,
                   patience_increase: float = 2, improvement_threshold: float = 0.995,
                   desc: str = "train") -> dict:
    """The DeepLearningTutorials' loop: SGD over minibatches, validation every
    ``min(n_train_batches, patience // 2)`` iterations, the test error at each new best
    validation error, and stop once ``patience`` iterations have gone by without a significant
    improvement. Returns ``best_valid``, ``test`` (at the best validation), ``epochs``,
    ``best_iter``, ``seconds`` and ``history`` (per epoch: train cost, validation error, the test
    error at the best validation so far, and the seconds elapsed since training started)."""
    validation_frequency = max(1, min(n_train_batches, patience // 2))
    best_valid, test_score, best_iter, epoch = np.inf, np.inf, 0, 0
    history: dict[str, list] = {"epoch": [], "train_cost": [], "valid_error": [], "test_error": [], "seconds": []}
    start = time.perf_counter()
    done = False
    bar = progress(range(n_epochs), desc=desc, unit="epoch")
    for epoch_index in bar:
        epoch = epoch_index + 1
        costs = []
        valid_error = None
        for minibatch_index in range(n_train_batches):
            costs.append(float(train_fn(minibatch_index)))
            iteration = (epoch - 1) * n_train_batches + minibatch_index
            if (iteration + 1) % validation_frequency == 0:
                valid_error = float(np.mean(validate()))
                if valid_error < best_valid:
                    if valid_error < best_valid * improvement_threshold:
                        patience = max(patience, iteration * patience_increase)
                    best_valid, best_iter = valid_error, iteration
                    test_score = float(np.mean(test()))
            if patience <= iteration:
                done = True
                break
        history["epoch"].append(epoch)
        history["train_cost"].append(float(np.mean(costs)) if costs else float("nan"))
        history["valid_error"].append(valid_error if valid_error is not None else float(np.mean(validate())))
        history["test_error"].append(test_score)
        history["seconds"].append(time.perf_counter() - start)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(cost=f"{history['train_cost'][-1]:.4f}", valid=f"{100 * best_valid:.2f}%",
                            test=f"{100 * test_score:.2f}%")
        if getattr(bar, "disable", True):  # no progress bar: one line per epoch, as the tutorials print
            print(f"{desc} epoch {epoch}: cost {history['train_cost'][-1]:.4f}, validation error "
                  f"{100 * history['valid_error'][-1]:.2f} %, best {100 * best_valid:.2f} % (test "
                  f"{100 * test_score:.2f} %), {history['seconds'][-1]:.0f} s", flush=True)
        if done:
            break
    if hasattr(bar, "close"):
        bar.close()
    return {"best_valid": best_valid, "test": test_score, "epochs": epoch, "best_iter": best_iter,
            "seconds": time.perf_counter() - start, "history": history}


def report(result: dict, name: str) -> None:
    print(f"{name}: best validation error {100 * result['best_valid']:.3f} % at iteration "
          f"{result['best_iter'] + 1}, test error {100 * result['test']:.3f} %, "
          f"{result['epochs']} epochs in {result['seconds']:.1f} s")


def pretrain(fns: Sequence[Callable], n_train_batches: int, epochs: int, desc: str = "pretrain",
             **kwargs: Any) -> list[list[float]]:
    """Greedy layer-wise pretraining: ``epochs`` passes of each layer's function; per-layer
    mean costs per epoch."""
    costs = []
    for i, fn in enumerate(fns):
        layer_costs = []
        bar = progress(range(epochs), desc=f"{desc} layer {i}", unit="epoch")
        for _ in bar:
            c = float(np.mean([fn(index, **kwargs) for index in range(n_train_batches)]))
            layer_costs.append(c)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(cost=f"{c:.4f}")
        print(f"{desc} layer {i}: cost per epoch " + ", ".join(f"{c:.4f}" for c in layer_costs))
        costs.append(layer_costs)
    return costs


# -- figures -----------------------------------------------------------------------------------


def scale_to_unit_interval(ndar: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    ndar = ndar.astype(np.float64).copy()
    ndar -= ndar.min()
    ndar *= 1.0 / (ndar.max() + eps)
    return ndar


def tile_raster_images(X: np.ndarray, img_shape: tuple[int, int], tile_shape: tuple[int, int],
                       tile_spacing: tuple[int, int] = (1, 1), scale_rows_to_unit_interval: bool = True) -> np.ndarray:
    """Rows of ``X`` as images on a grid (the tutorials' ``utils.tile_raster_images``), uint8."""
    out_shape = [(ishp + tsp) * tshp - tsp for ishp, tshp, tsp in zip(img_shape, tile_shape, tile_spacing)]
    out = np.zeros(out_shape, dtype=np.uint8)
    H, W = img_shape
    Hs, Ws = tile_spacing
    for r in range(tile_shape[0]):
        for c in range(tile_shape[1]):
            k = r * tile_shape[1] + c
            if k >= X.shape[0]:
                continue
            img = X[k].reshape(img_shape)
            img = scale_to_unit_interval(img) if scale_rows_to_unit_interval else np.clip(img, 0, 1)
            out[r * (H + Hs): r * (H + Hs) + H, c * (W + Ws): c * (W + Ws) + W] = (255 * img).astype(np.uint8)
    return out


def save_image(array: np.ndarray, path: Path, scale: int = 1) -> Path:
    """Write a 2-D uint8 (or [0, 1] float) array as a PNG, enlarged ``scale`` times."""
    from PIL import Image

    if array.dtype != np.uint8:
        array = (255 * np.clip(array, 0, 1)).astype(np.uint8)
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
    image.save(path)
    print(f"wrote {path}")
    return path


def save_filters(W: np.ndarray, img_shape: tuple[int, int], path: Path, n: int = 100, scale: int = 1) -> Path:
    """The first ``n`` columns of a ``(n_visible, n_hidden)`` weight matrix as tiled images."""
    n = min(n, W.shape[1])
    cols = int(np.ceil(np.sqrt(n)))
    tiles = tile_raster_images(W.T[:n], img_shape, (int(np.ceil(n / cols)), cols))
    return save_image(tiles, path, scale)


def plot_curves(history: dict, path: Path, title: str = "") -> Path:
    """Training cost and validation error per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(history["epoch"], history["train_cost"], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training cost (NLL)")
    ax2.plot(history["epoch"], 100 * np.asarray(history["valid_error"]), marker="o", color="tab:red")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation error (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
    return path
