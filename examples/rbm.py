"""A binary RBM trained with persistent contrastive divergence (PCD-15) on MNIST, as in the
DeepLearningTutorials' ``rbm.py`` (500 hidden units, lr 0.1, batch 20, 15 epochs; the tutorial's
pseudo-likelihood cost goes from -90.65 to -62.76). Writes the learned filters and Gibbs samples.

    python examples/rbm.py [--backend numpy] [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402
from examples.common import (  # noqa: E402
    load_shared,
    n_batches,
    parse_args,
    progress,
    save_filters,
    save_image,
    side,
    tile_raster_images,
)
from frontends.models import RBM  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--lr", type=float, default=0.1)
        p.add_argument("--n-hidden", type=int, default=500)
        p.add_argument("--batch-size", type=int, default=20)
        p.add_argument("--k", type=int, default=15, help="Gibbs steps per update (PCD-k)")
        p.add_argument("--cd", action="store_true", help="CD-k instead of persistent CD-k")
        p.add_argument("--n-chains", type=int, default=20)
        p.add_argument("--n-samples", type=int, default=10)
        p.add_argument("--plot-every", type=int, default=1000, help="Gibbs steps between sample rows")

    args = parse_args(__doc__.splitlines()[0], epochs=15, quick_epochs=3, argv=argv, extra=extra)
    if args.quick:
        args.n_hidden, args.plot_every, args.k = min(args.n_hidden, 64), min(args.plot_every, 50), min(args.k, 5)
    datasets, raw = load_shared(args.dataset)
    train_x = datasets[0][0]
    test_x = raw[2][0]
    n_visible, img = raw[0][0].shape[1], (side(args.dataset),) * 2
    rng = np.random.default_rng(args.seed)

    index, x = T.lscalar("index"), T.matrix("x")
    rbm = RBM(x, n_visible, args.n_hidden, rng=rng, theano_rng=engine.RandomStreams(args.seed))
    persistent = None if args.cd else engine.shared(np.zeros((args.batch_size, args.n_hidden), "float32"),
                                                    name="persistent_chain")
    cost, updates = rbm.get_cost_updates(lr=args.lr, persistent=persistent, k=args.k)
    bs = args.batch_size
    train_rbm = engine.function([index], cost, updates=updates, givens={x: train_x[index * bs:(index + 1) * bs]},
                         backend=args.backend, name="train_rbm")
    kind = "CD" if args.cd else "PCD"
    print(f"RBM {n_visible}x{args.n_hidden} on {args.dataset} ({args.backend} backend), {kind}-{args.k}, "
          f"lr {args.lr}, batch {bs}")
    history = []
    bar = progress(range(args.epochs), desc="rbm", unit="epoch")
    for epoch in bar:
        mean_cost = float(np.mean([train_rbm(i) for i in range(n_batches(train_x, bs))]))
        history.append(mean_cost)
        print(f"Training epoch {epoch}, cost is {mean_cost:.4f}")
        save_filters(rbm.W.get_value(), img, args.out / f"filters_at_epoch_{epoch}.png",
                     scale=1 if img[0] > 10 else 4)

    # sampling: n_chains persistent chains started from test examples, one row per plot_every steps
    start = rng.integers(len(test_x) - args.n_chains)
    chain = engine.shared(test_x[start:start + args.n_chains].astype("float32"), name="vis_chain")
    _, _, _, _, vis_mf, vis_sample = rbm.gibbs_vhv(chain)
    sample_fn = engine.function([], vis_mf, updates=[(chain, vis_sample)], backend=args.backend, name="sample_fn")
    rows = []
    for _ in progress(range(args.n_samples), desc="sampling", unit="row"):
        for _ in range(args.plot_every - 1):
            sample_fn()
        rows.append(sample_fn())
    tiles = tile_raster_images(np.concatenate(rows), img, (args.n_samples, args.n_chains))
    save_image(tiles, args.out / "samples.png", scale=1 if img[0] > 10 else 4)
    return {"costs": history}


if __name__ == "__main__":
    main()
