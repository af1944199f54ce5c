"""Denoising autoencoders with tied weights on MNIST, as in the DeepLearningTutorials' ``dA.py``
(500 hidden units, cross-entropy, lr 0.1, batch 20, 15 epochs): one without corruption and one
with 30 % masking noise. Writes both filter images: the corrupted one learns stroke detectors.

    python examples/dae.py [--backend numpy] [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402
from examples.common import load_shared, n_batches, parse_args, progress, save_filters, side  # noqa: E402
from frontends.models import DenoisingAutoencoder  # noqa: E402


def train_da(args, train_x, n_visible: int, corruption: float) -> tuple[DenoisingAutoencoder, list]:
    index, x = T.lscalar("index"), T.matrix("x")
    da = DenoisingAutoencoder(x, n_visible, args.n_hidden, rng=np.random.default_rng(args.seed),
                              theano_rng=engine.RandomStreams(args.seed + 1))
    cost, updates = da.get_cost_updates(corruption_level=corruption, learning_rate=args.lr)
    bs = args.batch_size
    train = engine.function([index], cost, updates=updates, givens={x: train_x[index * bs:(index + 1) * bs]},
                     backend=args.backend, name=f"train_da{int(100 * corruption)}")
    costs = []
    for epoch in progress(range(args.epochs), desc=f"dA corruption {corruption:.0%}", unit="epoch"):
        costs.append(float(np.mean([train(i) for i in range(n_batches(train_x, bs))])))
        print(f"corruption {corruption:.0%}: training epoch {epoch}, cost {costs[-1]:.4f}")
    return da, costs


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--lr", type=float, default=0.1)
        p.add_argument("--n-hidden", type=int, default=500)
        p.add_argument("--batch-size", type=int, default=20)

    args = parse_args(__doc__.splitlines()[0], epochs=15, quick_epochs=3, argv=argv, extra=extra)
    if args.quick:
        args.n_hidden = min(args.n_hidden, 64)
    datasets, raw = load_shared(args.dataset)
    n_visible, img = raw[0][0].shape[1], (side(args.dataset),) * 2
    print(f"dA {n_visible}x{args.n_hidden} on {args.dataset} ({args.backend} backend), lr {args.lr}")
    results = {}
    for corruption in (0.0, 0.3):
        da, costs = train_da(args, datasets[0][0], n_visible, corruption)
        save_filters(da.W.get_value(), img, args.out / f"filters_corruption_{int(100 * corruption)}.png",
                     scale=1 if img[0] > 10 else 4)
        results[corruption] = costs
    return results


if __name__ == "__main__":
    main()
