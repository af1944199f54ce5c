"""Stacked denoising autoencoders on MNIST, as in the DeepLearningTutorials' ``SdA.py``: three
layers of 1000 sigmoid units pretrained greedily as denoising autoencoders (corruption 0.1, 0.2,
0.3; 15 epochs), then fine-tuned with a softmax on top by SGD (lr 0.1) with early stopping. The
tutorial reports 1.3 % test error with batch size 1 and pretraining lr 0.001; batch size 1 is
impractical here, so the default is batch 20 with pretraining lr 0.01 (``--batch-size 1
--pretrain-lr 0.001`` gives the tutorial's setting). At batch 20 the fine-tuning cost is a mean
over 20 examples: ``--finetune-lr 0.5`` brings each example's step closer to the tutorial's
(1.39 % test error in RESULTS.md, against 1.54 % at lr 0.1).

    python examples/sda.py [--backend numpy] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from examples.common import early_stopping, load_shared, n_batches, parse_args, pretrain, report  # noqa: E402
from frontends.models import StackedDenoisingAutoencoder  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--pretrain-epochs", type=int, default=15)
        p.add_argument("--pretrain-lr", type=float, default=0.01)
        p.add_argument("--finetune-lr", type=float, default=0.1)
        p.add_argument("--batch-size", type=int, default=20)
        p.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000, 1000])
        p.add_argument("--corruption", type=float, nargs="+", default=[0.1, 0.2, 0.3])

    args = parse_args(__doc__.splitlines()[0], epochs=1000, quick_epochs=10, argv=argv, extra=extra,
                      figures=False)
    if args.quick:
        args.hidden, args.pretrain_epochs = [min(h, 64) for h in args.hidden[:2]], min(args.pretrain_epochs, 3)
        args.pretrain_lr = max(args.pretrain_lr, 0.1)
    datasets, raw = load_shared(args.dataset)
    train_x = datasets[0][0]
    bs = args.batch_size
    sda = StackedDenoisingAutoencoder(np.random.default_rng(args.seed), args.seed + 1, n_ins=raw[0][0].shape[1],
                                      hidden_layers_sizes=args.hidden, n_outs=10,
                                      corruption_levels=args.corruption)
    print(f"SdA {args.hidden} on {args.dataset} ({args.backend} backend), corruption {args.corruption}, "
          f"batch {bs}")
    fns = sda.pretraining_functions(train_x, bs, backend=args.backend)
    pretrain_costs = pretrain(fns, n_batches(train_x, bs), args.pretrain_epochs, desc="SdA pretrain",
                              lr=args.pretrain_lr)
    train_fn, validate, test = sda.build_finetune_functions(datasets, bs, args.finetune_lr, backend=args.backend)
    result = early_stopping(train_fn, n_batches(train_x, bs), validate, test, args.epochs, patience=10 * n_batches(
        train_x, bs), desc="SdA finetune")
    report(result, "SdA")
    result["pretrain_costs"] = pretrain_costs
    return result


if __name__ == "__main__":
    main()
