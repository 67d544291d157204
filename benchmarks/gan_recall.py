"""Precision, recall and coverage of trained defect GANs against their real crops (docs/GAN.md).

For each class, the GAN's samples, traditionally augmented copies of the real crops and one
half of the real crops against the other are scored in ImageNet features, both as the gate
sees them (crops placed on the class's host patches and cut back out) and as raw crops; the
pixel spread across samples is printed beside them. What the gate's recall floor reads.

    python benchmarks/gan_recall.py PATCH_DIR GAN_DIR/sdg CLASS [CLASS ...]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from smh_ml.config.presets import get_profile
from smh_ml.data.datasets import load_patch_set
from smh_ml.data.recipe import profile_for_folder
from smh_ml.synthetic.coverage import manifold_scores
from smh_ml.synthetic.defects import augment_crops, gan_data
from smh_ml.synthetic.fid import IMAGENET_NAME, extractor_for, features
from smh_ml.synthetic.gan.experiment import load_generator, scored_view
from smh_ml.synthetic.gan.training import generate


def spread(crops: np.ndarray) -> float:
    """Mean over pixels of the grey-level std across samples."""
    return float(crops.reshape(len(crops), -1).astype(np.float32).std(axis=0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch_dir")
    parser.add_argument("gan_dir")
    parser.add_argument("classes", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(2)
    patch_set = load_patch_set(args.patch_dir)
    profile = profile_for_folder(get_profile("auto"), args.patch_dir)
    extractor = extractor_for("imagenet")

    def feats(arrays: np.ndarray) -> torch.Tensor:
        return features(arrays, extractor, IMAGENET_NAME)

    for label in args.classes:
        data = gan_data(patch_set, label, profile)
        generator, config = load_generator(f"{args.gan_dir}/{label}")
        fake = generate(generator, profile.gan.fid_samples, config["latent"], seed=1)
        real = data.real
        copies = augment_crops(real, len(real) + profile.gan.fid_samples, profile.augment, 3)[0][len(real):]
        print(f"{label}: {len(real)} real crops; pixel spread across samples real {spread(real[:, 0]):.2f}, "
              f"generated {spread(fake[:, 0]):.2f}, augmented {spread(copies[:, 0]):.2f}")
        placed = [feats(scored_view(x, data, IMAGENET_NAME)) for x in (real, fake, copies)]
        order = np.random.default_rng(0).permutation(len(real))
        first, second = order[: len(real) // 2], order[len(real) // 2:]
        raw = [feats(np.stack([cv2.resize(c, (64, 64)) for c in x[:, 0]])) for x in (real, fake, copies)]
        rows = {"placed: generated": manifold_scores(placed[0], placed[1]),
                "placed: augmented": manifold_scores(placed[0], placed[2]),
                "placed: real halves": manifold_scores(placed[0][first], placed[0][second]),
                "raw: generated": manifold_scores(raw[0], raw[1]),
                "raw: augmented": manifold_scores(raw[0], raw[2])}
        for name, s in rows.items():
            print(f"  {name:20s} precision {s['precision']:.3f} recall {s['recall']:.3f} "
                  f"coverage {s['coverage']:.3f}")


if __name__ == "__main__":
    main()
