"""Multi-class logistic regression trained by minibatch SGD on MNIST, as in the
DeepLearningTutorials' ``logistic_sgd.py`` (learning rate 0.13, batch 600, patience-based early
stopping; the tutorial reports 7.489 % test error).

    python examples/logistic_regression.py [--backend numpy] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402
from examples.common import early_stopping, load_shared, n_batches, parse_args, report  # noqa: E402
from frontends.models import LogisticRegression  # noqa: E402
from frontends.updates import sgd  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--lr", type=float, default=0.13)
        p.add_argument("--batch-size", type=int, default=600)

    args = parse_args(__doc__.splitlines()[0], epochs=1000, quick_epochs=20, argv=argv, extra=extra,
                      figures=False)
    datasets, raw = load_shared(args.dataset)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = datasets
    batch_size = min(args.batch_size, raw[0][0].shape[0] // 10) if args.dataset == "digits" else args.batch_size
    n_in, n_out = raw[0][0].shape[1], 10

    index = T.lscalar("index")
    x, y = T.matrix("x"), T.lvector("y")
    classifier = LogisticRegression(x, n_in, n_out)
    cost = classifier.negative_log_likelihood(y)
    s = slice(index * batch_size, (index + 1) * batch_size)

    def scorer(sx, sy):
        fn = engine.function([index], classifier.errors(y), givens={x: sx[s], y: sy[s]}, backend=args.backend)
        return lambda: [float(fn(i)) for i in range(n_batches(sx, batch_size))]

    train_model = engine.function([index], cost, updates=sgd(cost, classifier.params, args.lr),
                           givens={x: train_x[s], y: train_y[s]}, backend=args.backend)
    print(f"logistic regression on {args.dataset} ({args.backend} backend): lr {args.lr}, batch {batch_size}")
    result = early_stopping(train_model, n_batches(train_x, batch_size), scorer(valid_x, valid_y),
                            scorer(test_x, test_y), args.epochs, desc="logistic regression")
    report(result, "logistic regression")
    return result


if __name__ == "__main__":
    main()
