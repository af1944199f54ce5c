"""A one-hidden-layer perceptron (tanh) trained by SGD with L1/L2 regularization, as in the
DeepLearningTutorials' ``mlp.py`` (500 hidden units, lr 0.01, L2 1e-4, batch 20; the tutorial
reports 1.65 % MNIST test error).

    python examples/mlp.py [--backend numpy] [--quick]
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
from frontends.models import MLP  # noqa: E402
from frontends.updates import sgd  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--lr", type=float, default=0.01)
        p.add_argument("--L1", type=float, default=0.0)
        p.add_argument("--L2", type=float, default=1e-4)
        p.add_argument("--n-hidden", type=int, default=500)
        p.add_argument("--batch-size", type=int, default=20)

    args = parse_args(__doc__.splitlines()[0], epochs=1000, quick_epochs=20, argv=argv, extra=extra)
    datasets, raw = load_shared(args.dataset)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = datasets
    n_hidden = min(args.n_hidden, 100) if args.quick else args.n_hidden
    lr = args.lr * 5 if args.dataset == "digits" and args.lr == 0.01 else args.lr

    index = T.lscalar("index")
    x, y = T.matrix("x"), T.lvector("y")
    classifier = MLP(x, raw[0][0].shape[1], n_hidden, 10, rng=args.seed)
    cost = classifier.negative_log_likelihood(y) + args.L1 * classifier.L1 + args.L2 * classifier.L2_sqr
    bs = args.batch_size
    s = slice(index * bs, (index + 1) * bs)

    def scorer(sx, sy):
        fn = engine.function([index], classifier.errors(y), givens={x: sx[s], y: sy[s]}, backend=args.backend)
        return lambda: [float(fn(i)) for i in range(n_batches(sx, bs))]

    train_model = engine.function([index], cost, updates=sgd(cost, classifier.params, lr),
                           givens={x: train_x[s], y: train_y[s]}, backend=args.backend)
    print(f"MLP {n_hidden} tanh units on {args.dataset} ({args.backend} backend): lr {lr}, batch {bs}, "
          f"L1 {args.L1}, L2 {args.L2}")
    result = early_stopping(train_model, n_batches(train_x, bs), scorer(valid_x, valid_y), scorer(test_x, test_y),
                            args.epochs, patience=10000, desc="mlp")
    report(result, "MLP")
    plot_curves(result["history"], args.out / "mlp_curves.png", f"MLP on {args.dataset}")
    return result


if __name__ == "__main__":
    main()
