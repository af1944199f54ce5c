"""A deep belief network on MNIST, as in the DeepLearningTutorials' ``DBN.py``: three RBMs of 1000
units pretrained greedily with CD-1 (100 epochs, lr 0.01, batch 10), then fine-tuned with a
softmax on top by SGD (lr 0.1) with early stopping. The tutorial reports 1.34 % test error.
Its pretraining takes about 10 hours on 2 cores; ``--pretrain-epochs 20 --pretrain-lr 0.05``
(the same lr x epochs) took 53 min and reached 1.44 % (RESULTS.md).

    python examples/dbn.py [--backend numpy] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from examples.common import early_stopping, load_shared, n_batches, parse_args, pretrain, report  # noqa: E402
from frontends.models import DBN  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--pretrain-epochs", type=int, default=100)
        p.add_argument("--pretrain-lr", type=float, default=0.01)
        p.add_argument("--finetune-lr", type=float, default=0.1)
        p.add_argument("--batch-size", type=int, default=10)
        p.add_argument("--k", type=int, default=1, help="Gibbs steps of CD-k")
        p.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000, 1000])

    args = parse_args(__doc__.splitlines()[0], epochs=1000, quick_epochs=10, argv=argv, extra=extra,
                      figures=False)
    if args.quick:
        args.hidden, args.pretrain_epochs = [min(h, 64) for h in args.hidden[:2]], min(args.pretrain_epochs, 3)
        args.pretrain_lr = max(args.pretrain_lr, 0.05)
    datasets, raw = load_shared(args.dataset)
    train_x = datasets[0][0]
    bs = args.batch_size
    dbn = DBN(np.random.default_rng(args.seed), args.seed + 1, n_ins=raw[0][0].shape[1],
              hidden_layers_sizes=args.hidden, n_outs=10)
    print(f"DBN {args.hidden} on {args.dataset} ({args.backend} backend), CD-{args.k}, batch {bs}")
    fns = dbn.pretraining_functions(train_x, bs, k=args.k, backend=args.backend)
    pretrain_costs = pretrain(fns, n_batches(train_x, bs), args.pretrain_epochs, desc="DBN pretrain",
                              lr=args.pretrain_lr)
    train_fn, validate, test = dbn.build_finetune_functions(datasets, bs, args.finetune_lr, backend=args.backend)
    result = early_stopping(train_fn, n_batches(train_x, bs), validate, test, args.epochs,
                            patience=4 * n_batches(train_x, bs), desc="DBN finetune")
    report(result, "DBN")
    result["pretrain_costs"] = pretrain_costs
    return result


if __name__ == "__main__":
    main()
