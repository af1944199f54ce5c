"""LeNet5 on MNIST, as in the DeepLearningTutorials' ``convolutional_mlp.py``: conv(20 5x5) ->
max-pool 2x2 -> tanh, conv(50 5x5) -> max-pool 2x2 -> tanh, 500 tanh units, softmax; SGD with
lr 0.1, batch 500, patience-based early stopping (the tutorial reports 0.92 % test error).
Writes the learning curves (training cost and validation error per epoch) as a PNG.

    python examples/lenet.py [--backend numpy] [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402
from examples.common import (  # noqa: E402
    early_stopping,
    load_shared,
    n_batches,
    parse_args,
    plot_curves,
    report,
)
from frontends.models import LeNet  # noqa: E402
from frontends.updates import sgd  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--lr", type=float, default=0.1)
        p.add_argument("--batch-size", type=int, default=500)
        p.add_argument("--nkerns", type=int, nargs=2, default=[20, 50])
        p.add_argument("--n-hidden", type=int, default=500)

    args = parse_args(__doc__.splitlines()[0], epochs=200, quick_epochs=15, argv=argv, extra=extra)
    datasets, raw = load_shared(args.dataset)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = datasets
    if args.dataset == "digits":  # 8x8 images: 3x3 then 2x2 filters, one 2x2 pool
        config = dict(image_shape=(8, 8), filter_sizes=(3, 2), pool_sizes=(2, 1))
        nkerns, n_hidden, bs = [min(k, 16) for k in args.nkerns], min(args.n_hidden, 100), min(args.batch_size, 50)
    else:
        config = dict(image_shape=(28, 28), filter_sizes=(5, 5), pool_sizes=(2, 2))
        nkerns, n_hidden, bs = args.nkerns, args.n_hidden, args.batch_size

    index = T.lscalar("index")
    x, y = T.matrix("x"), T.lvector("y")
    net = LeNet(x, nkerns=nkerns, n_hidden=n_hidden, n_out=10, rng=args.seed, **config)
    cost = net.negative_log_likelihood(y)
    s = slice(index * bs, (index + 1) * bs)

    def scorer(sx, sy):
        fn = engine.function([index], net.errors(y), givens={x: sx[s], y: sy[s]}, backend=args.backend)
        return lambda: [float(fn(i)) for i in range(n_batches(sx, bs))]

    train_model = engine.function([index], cost, updates=sgd(cost, net.params, args.lr),
                           givens={x: train_x[s], y: train_y[s]}, backend=args.backend, name="train_lenet")
    print(f"LeNet nkerns {nkerns}, {n_hidden} hidden, on {args.dataset} ({args.backend} backend): "
          f"lr {args.lr}, batch {bs}")
    result = early_stopping(train_model, n_batches(train_x, bs), scorer(valid_x, valid_y), scorer(test_x, test_y),
                            args.epochs, patience=10000, desc="lenet")
    report(result, "LeNet")
    plot_curves(result["history"], args.out / "lenet_learning_curves.png", f"LeNet on {args.dataset}")
    return result


if __name__ == "__main__":
    main()
