"""First-layer bases of a convolutional RBM with probabilistic max-pooling (Lee et al. 2009) trained
by CD-1 on whitened natural-image patches (the two photographs scikit-learn ships, 1/f-whitened as
in Olshausen & Field 1997). The bases should come out as localized, oriented edge detectors.

    python examples/crbm.py [--backend numpy] [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402
from examples.common import parse_args, progress, save_image, tile_raster_images  # noqa: E402
from frontends.models import ConvRBM  # noqa: E402


def load_gray_images(downsample: int = 2) -> list[np.ndarray]:
    """scikit-learn's sample photographs, grey, block-averaged ``downsample`` times."""
    from sklearn.datasets import load_sample_images

    images = []
    for image in load_sample_images().images:
        gray = image.astype(np.float64).mean(axis=2)
        h, w = (s // downsample * downsample for s in gray.shape)
        gray = gray[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample).mean(axis=(1, 3))
        images.append(gray)
    return images


def whiten(image: np.ndarray, f0: float = 0.2) -> np.ndarray:
    """Flatten the image's radially averaged amplitude spectrum (a data-driven version of Olshausen
    & Field's 1/f whitening, whose slope these smooth JPEGs do not quite have) with their low-pass
    roll-off ``exp(-(f / f0)^4)``; zero mean, unit variance."""
    h, w = image.shape
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    rho = np.sqrt(fx ** 2 + fy ** 2)
    spectrum = np.fft.fft2(image - image.mean())
    bins = np.minimum((rho / rho.max() * 64).astype(int), 63)
    amplitude = np.bincount(bins.ravel(), np.abs(spectrum).ravel(), 64) / np.maximum(np.bincount(bins.ravel(), None,
                                                                                                  64), 1)
    gain = np.exp(-(rho / f0) ** 4) / np.maximum(amplitude[bins], 1e-12)
    gain[0, 0] = 0.0
    out = np.real(np.fft.ifft2(spectrum * gain))
    return (out - out.mean()) / out.std()


def sample_patches(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    patches = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        image = images[rng.integers(len(images))]
        r, c = rng.integers(image.shape[0] - size), rng.integers(image.shape[1] - size)
        patches[i, 0] = image[r:r + size, c:c + size]
    return patches


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--bases", type=int, default=24)
        p.add_argument("--filter-size", type=int, default=10)
        p.add_argument("--patch-size", type=int, default=21)
        p.add_argument("--n-patches", type=int, default=2000)
        p.add_argument("--batch-size", type=int, default=20)
        p.add_argument("--lr", type=float, default=0.02)
        p.add_argument("--sparsity", type=float, default=0.005, help="target mean detection activation")
        p.add_argument("--sparsity-cost", type=float, default=10.0)
        p.add_argument("--momentum", type=float, default=0.9)
        p.add_argument("--weight-decay", type=float, default=0.01)

    args = parse_args(__doc__.splitlines()[0], epochs=20, quick_epochs=3, argv=argv, extra=extra)
    if args.quick:
        args.bases, args.filter_size, args.patch_size = min(args.bases, 12), min(args.filter_size, 8), 21
        args.n_patches = min(args.n_patches, 200)
    if (args.patch_size - args.filter_size + 1) % 2:
        raise SystemExit(f"--patch-size {args.patch_size} - --filter-size {args.filter_size} + 1 must be even "
                         f"(2x2 pooling blocks tile the detection layer)")
    rng = np.random.default_rng(args.seed)
    images = [whiten(im) for im in load_gray_images()]
    patches = sample_patches(images, args.n_patches, args.patch_size, rng)
    data = engine.shared(patches, name="patches")

    index, x = T.lscalar("index"), T.tensor4("x")
    f = args.filter_size
    crbm = ConvRBM(x, (args.bases, 1, f, f), (2, 2), rng=rng, theano_rng=args.seed, gaussian_visible=True,
                   sparsity_target=args.sparsity, sparsity_cost=args.sparsity_cost, weight_decay=args.weight_decay)
    cost, updates = crbm.get_cost_updates(lr=args.lr, momentum=args.momentum)
    bs = args.batch_size
    train = engine.function([index], [cost, crbm.mean_activation], updates=updates,
                     givens={x: data[index * bs:(index + 1) * bs]}, backend=args.backend, name="train_crbm")
    print(f"ConvRBM {args.bases} bases {f}x{f}, 2x2 probabilistic max-pooling, on {args.n_patches} whitened "
          f"{args.patch_size}x{args.patch_size} patches ({args.backend} backend)")
    history = []
    for epoch in progress(range(args.epochs), desc="crbm", unit="epoch"):
        results = np.array([train(i) for i in range(args.n_patches // bs)])
        history.append(results.mean(axis=0).tolist())
        print(f"epoch {epoch}: reconstruction error {history[-1][0]:.4f}, "
              f"mean detection activation {history[-1][1]:.4f}")
    W = crbm.W.get_value()[:, 0]
    cols = int(np.ceil(np.sqrt(len(W))))
    tiles = tile_raster_images(W.reshape(len(W), -1), (f, f), ((len(W) + cols - 1) // cols, cols))
    save_image(tiles, args.out / "crbm_bases.png", scale=4)
    save_image(tile_raster_images(patches[:64, 0].reshape(64, -1), patches.shape[2:], (8, 8)),
               args.out / "whitened_patches.png", scale=2)
    return {"history": history}


if __name__ == "__main__":
    main()
