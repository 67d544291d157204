"""Real patches next to SDG-GAN and DCGAN samples, one row per defect class (docs/GAN.md).

Samples are drawn afresh from each class's saved generator (the EMA / best-checkpoint one that
the pipeline samples), whatever the quality gate decided; the real patches are the class's
TRAIN patches the GAN learnt from. Not a test: it writes a picture for people to judge.

    python benchmarks/gan_figure.py PATCH_DIR GAN_ROOT OUT.png [--per 6] [--classes a,b]

The defect classes are every class but the clean one the patch set was cut with (its
``profile.json``; ``--clean-class`` overrides it).

GAN_ROOT holds ``sdg/<class>/`` and ``dcgan/<class>/`` (``smh-ml gan`` or ``smh-ml reproduce``'s
``gans/`` folder).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smh_ml.data.datasets import load_patch_set
from smh_ml.evaluation.plots import gan_comparison_png
from smh_ml.synthetic.gan.experiment import load_generator
from smh_ml.synthetic.gan.training import generate
from smh_ml.synthetic.pgan import class_patches, defect_classes

KINDS = {"sdg": "SDG-GAN", "dcgan": "DCGAN"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch_dir", type=Path)
    parser.add_argument("gan_root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per", type=int, default=6, help="patches per group and class")
    parser.add_argument("--classes", default=None)
    parser.add_argument("--clean-class", default=None, help="default: the patch set's profile's clean class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    patch_set = load_patch_set(args.patch_dir)
    record = args.patch_dir / "profile.json"
    if args.clean_class is None and not record.is_file():
        raise SystemExit(f"{record}: no profile record to read the clean class from; pass --clean-class")
    clean = args.clean_class or json.loads(record.read_text())["clean_class"]
    labels = args.classes.split(",") if args.classes else defect_classes(patch_set, clean)
    rows = {}
    for label in labels:
        rows[label] = {"real": class_patches(patch_set, label)}
        for kind, name in KINDS.items():
            folder = args.gan_root / kind / label
            if (folder / "scores.json").is_file() and json.loads((folder / "scores.json").read_text()).get("skipped"):
                continue  # a class with no GAN (its defects fill the patch): its row shows the real patches
            if not (folder / "generator.pt").is_file():
                raise SystemExit(f"{folder}: no generator.pt (train the {name} of {label!r} first)")
            generator, config = load_generator(folder)
            drawn = generate(generator, args.per * 4, config["latent"], seed=args.seed)
            rows[label][name] = drawn[:, 0] if drawn.ndim == 4 else drawn  # a defect GAN's crops, not masks
    gan_comparison_png(rows, args.out, per_group=args.per, seed=args.seed,
                       title="real TRAIN patches | SDG-GAN samples | DCGAN samples")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
