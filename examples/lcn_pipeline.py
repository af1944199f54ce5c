"""The seed paper's feature-extraction layer on natural images: filter bank (conv2d with Gabor
filters) -> rectification (|.|, Jarrett et al. 2009's "Rabs") -> pooling -> local contrast
normalization, applied to the photographs scikit-learn ships. Saves the feature maps before and
after LCN: after it, every region of the image has comparable contrast.

    python examples/lcn_pipeline.py [--backend numpy] [--quick] [--out DIR] [--pool max|avg|l2]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import engine  # noqa: E402
import frontends.nn as nn  # noqa: E402
import frontends.tensor as T  # noqa: E402
from examples.common import parse_args, save_image, tile_raster_images  # noqa: E402


def gabor_bank(n_orientations: int = 8, size: int = 9, wavelength: float = 4.0, sigma: float = 2.0) -> np.ndarray:
    """``(n_orientations, 1, size, size)`` zero-mean, unit-norm even Gabor filters."""
    r = np.arange(size) - (size - 1) / 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    filters = []
    for theta in np.arange(n_orientations) * np.pi / n_orientations:
        u = xx * np.cos(theta) + yy * np.sin(theta)
        g = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2)) * np.cos(2 * np.pi * u / wavelength)
        g -= g.mean()
        filters.append(g / np.linalg.norm(g))
    return np.asarray(filters, dtype=np.float32)[:, None]


def load_images(downsample: int) -> np.ndarray:
    """scikit-learn's two sample photographs, grey, block-averaged, standardized: (2, 1, H, W)."""
    from sklearn.datasets import load_sample_images

    out = []
    for image in load_sample_images().images:
        gray = image.astype(np.float64).mean(axis=2) / 255.0
        h, w = (s // downsample * downsample for s in gray.shape)
        gray = gray[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample).mean(axis=(1, 3))
        out.append((gray - gray.mean()) / gray.std())
    return np.asarray(out, dtype=np.float32)[:, None]


def main(argv: list[str] | None = None) -> dict:
    def extra(p):
        p.add_argument("--pool", choices=("max", "avg", "l2"), default="avg")
        p.add_argument("--lcn-size", type=int, default=9)
        p.add_argument("--orientations", type=int, default=8)

    args = parse_args(__doc__.splitlines()[0], epochs=1, quick_epochs=1, argv=argv, extra=extra)
    images = load_images(downsample=4 if args.quick else 2)
    filters = gabor_bank(args.orientations)

    x = T.tensor4("images")
    features = nn.pool2d(abs(nn.conv2d(x, filters)), ws=(2, 2), mode=args.pool)
    normalized = nn.lcn(features, size=args.lcn_size)
    pipeline = engine.function([x], [features, normalized], backend=args.backend, name="lcn_pipeline")
    before, after = pipeline(images)
    print(f"images {images.shape} -> conv {filters.shape} -> |.| -> {args.pool}-pool 2x2 -> LCN {args.lcn_size}x"
          f"{args.lcn_size}: maps {after.shape} ({args.backend} backend)")

    n = before.shape[1]
    cols = int(np.ceil(np.sqrt(n)))
    grid = ((n + cols - 1) // cols, cols)
    for i in range(len(images)):
        save_image(tile_raster_images(images[i:i + 1, 0].reshape(1, -1), images.shape[2:], (1, 1)),
                   args.out / f"image{i}.png")
        for name, maps in (("before_lcn", before), ("after_lcn", after)):
            tiles = tile_raster_images(maps[i].reshape(n, -1), maps.shape[2:], grid, tile_spacing=(2, 2))
            save_image(tiles, args.out / f"maps{i}_{name}.png")
    # contrast across regions: spread of the local energy over 16x16 blocks, before and after
    def block_spread(maps):
        h, w = (s // 16 * 16 for s in maps.shape[2:])
        blocks = np.abs(maps[:, :, :h, :w]).reshape(*maps.shape[:2], h // 16, 16, w // 16, 16).mean(axis=(3, 5))
        return float(blocks.std() / blocks.mean())

    stats = {"spread_before": block_spread(before), "spread_after": block_spread(after)}
    print(f"coefficient of variation of local energy across 16x16 blocks: before LCN {stats['spread_before']:.3f},"
          f" after {stats['spread_after']:.3f}")
    return stats


if __name__ == "__main__":
    main()
