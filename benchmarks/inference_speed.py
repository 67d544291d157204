"""End-to-end decision speed: image files on disk -> Algorithm 1 decisions (issue 7).

Not a test: it prints figures. Every variant runs in its own subprocess (a clean peak-memory
reading, no warm caches shared), on the same JPEG captures 3584 px high (simulated line-scan
frames, 1700 px camera field, products of several widths), with the paper-profile
Inception-CNN (16 patches of 256 px: the 8 x 2 grid of a 2048 x 512 resize; ``--patch 64``
gives the same network at the demo profile's 64 px):

  torch-fp32           decode, crop/resize/tile, torch eager, Algorithm 1, one after another
  ort-fp32             the same through onnxruntime (smh_ml.inference.Engine)
  ort-fp32-overlap     ... decoding the next file on a second thread while the model runs
  ort-int8             int8 static quantization (smh_ml.quantization), sequential
  ort-int8-overlap     int8 with the overlap
  ort-fp32-draft       fp32, JPEGs decoded at a reduced DCT scale where the patch grid allows
  ort-fp32-draft-overlap  ... with the overlap

Weights: random (speed only; said in the output) unless --model-dir names an
``smh-ml train`` folder of the paper profile. Accuracy: with --accuracy-model-dir and
--patch-dir, each precision is also scored on that set's held-out test captures (torch,
ORT fp32, ORT int8 through the same Algorithm 1).

    python benchmarks/inference_speed.py [--images 24] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

VARIANTS = ("torch-fp32", "ort-fp32", "ort-fp32-overlap", "ort-int8", "ort-int8-overlap", "ort-fp32-draft",
            "ort-fp32-draft-overlap")
CLASSES = ["defect-free", "blowhole", "break", "crack", "fray", "uneven"]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_captures(folder: Path, count: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    from smh_ml.simulate import CLEAN_CLASS, DEFECT_CLASSES, simulate_capture

    rng = np.random.default_rng(seed)
    labels = [CLEAN_CLASS, *DEFECT_CLASSES]
    paths = []
    for i in range(count):
        capture = simulate_capture(labels[i % len(labels)], rng)
        path = folder / f"capture_{i:03d}.jpg"
        Image.fromarray(capture.image).save(path, quality=95)
        paths.append(path)
    return paths


def make_models(folder: Path, model_dir: Path | None, calibration_files: list[Path], threads: int,
                patch: int = 256) -> dict:
    import torch

    from smh_ml.deploy import Engine
    from smh_ml.export import export_onnx
    from smh_ml.models import build, count_parameters
    from smh_ml.quantization import quantize_int8

    torch.manual_seed(0)
    if model_dir is not None:
        from smh_ml.experiments import load_classifier
        model, report = load_classifier(model_dir)
        classes, geometry = report["classes"], report["geometry"]
        weights = f"trained ({model_dir})"
    else:
        model, classes = build("inception_cnn", len(CLASSES), patch).eval(), CLASSES
        geometry = {"rows": 8, "cols": 2, "patch": patch}
        weights = "random (speed only)"
    torch.save(model.state_dict(), folder / "model.pt")
    fp32 = export_onnx(model, folder / "model.onnx", geometry["patch"], classes, geometry, {"arch": "inception_cnn"})
    engine = Engine(fp32, threads=threads)
    calibration = np.concatenate([engine.patches(_read(p)) for p in calibration_files])
    int8 = quantize_int8(fp32, folder / "model.int8.onnx", calibration)
    return {"weights": weights, "classes": classes, "geometry": geometry, "fp32": str(fp32), "int8": str(int8),
            "parameters": count_parameters(model)}


def _read(path: Path) -> np.ndarray:
    from smh_ml.captures import read_gray
    return read_gray(path, convert=True)


def run_variant(variant: str, models: dict, files: list[Path], threads: int, warmup: int = 2) -> dict:
    """One variant over ``files`` (after ``warmup`` files); images/s and per-stage ms."""
    from smh_ml.deploy import Engine, to_input

    path = models["int8"] if "int8" in variant else models["fp32"]
    engine = Engine(path, threads=threads, fast_decode="draft" in variant)
    stages = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "decide": 0.0}
    if variant == "torch-fp32":
        import torch

        from smh_ml.models import build
        torch.set_num_threads(threads)
        model = build("inception_cnn", len(models["classes"]), models["geometry"]["patch"])
        model.load_state_dict(torch.load(Path(path).with_name("model.pt"), weights_only=True))
        model.eval()

        def probabilities(patches):
            with torch.inference_mode():
                return torch.softmax(model(torch.from_numpy(to_input(patches))), 1).numpy()
    else:
        probabilities = engine.probabilities

    def sequential(paths):
        for p in paths:
            t0 = time.perf_counter()
            image = engine.read(p)
            t1 = time.perf_counter()
            patches = engine.patches(image)
            t2 = time.perf_counter()
            probs = probabilities(patches)
            t3 = time.perf_counter()
            engine.decide_probs(probs)
            t4 = time.perf_counter()
            for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[key] += dt

    overlap = variant.endswith("overlap")
    if overlap:
        for _ in engine.decide_paths(files[:warmup]):
            pass
    else:
        sequential(files[:warmup])
        stages = dict.fromkeys(stages, 0.0)
    timed = files[warmup:]
    start = time.perf_counter()
    if overlap:
        decided = sum(p.decision is not None for p in engine.decide_paths(timed))
        assert decided == len(timed)
    else:
        sequential(timed)
    seconds = time.perf_counter() - start
    n = len(timed)
    tiles = models["geometry"]["rows"] * models["geometry"]["cols"]
    return {"variant": variant, "images": n, "seconds": seconds, "images_per_s": n / seconds,
            "patches_per_s": n * tiles / seconds,
            "ms_per_image": {k: 1e3 * v / n for k, v in stages.items()} if not overlap else None,
            "peak_rss_mb": peak_rss_mb()}


def accuracies(model_dir: Path, patch_dir: Path, workdir: Path, clean_class: str = "defect-free") -> dict:
    """Held-out Algorithm 1 accuracy of the same trained model in torch, ORT fp32 and ORT int8."""
    from smh_ml.datasets import load_patch_set
    from smh_ml.experiments import load_classifier
    from smh_ml.export import export_onnx
    from smh_ml.quantization import calibration_patches, onnx_accuracy, quantize_int8
    from smh_ml.training import class_names, evaluate_images, test_patches

    model, report = load_classifier(model_dir)
    patch_set = load_patch_set(patch_dir)
    names = class_names(set(patch_set.captures["label"]), clean_class)
    captures, groups = test_patches(patch_set)
    fp32 = export_onnx(model, workdir / "acc.onnx", report["geometry"]["patch"], names, report["geometry"])
    int8 = quantize_int8(fp32, workdir / "acc.int8.onnx", calibration_patches(patch_set, 512))
    return {"model": str(model_dir), "test_images": len(groups),
            "torch-fp32": float(evaluate_images(model, captures, groups, names)["accuracy"]),
            "ort-fp32": onnx_accuracy(fp32, patch_set, clean_class)[0],
            "ort-int8": onnx_accuracy(int8, patch_set, clean_class)[0]}


def decode_check(onnx_path: Path, patch_dir: Path) -> dict:
    """Full vs reduced-scale JPEG decoding on a patch set's held-out capture FILES: accuracy
    of each and how many decisions agree (the trained model of that set)."""
    import pandas as pd

    from smh_ml.deploy import Engine

    captures = pd.read_csv(patch_dir / "captures.csv")
    test = captures[captures["split"] == "test"]
    files, truth = [Path(p) for p in test["path"]], test["label"].tolist()
    out = {"model": str(onnx_path), "captures": len(files)}
    decided = {}
    for fast in (False, True):
        engine = Engine(onnx_path, fast_decode=fast)
        decided[fast] = [p.decision.label for p in engine.decide_paths(files)]
        out["draft" if fast else "full"] = float(np.mean([a == b for a, b in zip(decided[fast], truth)]))
    out["same_decision"] = int(sum(a == b for a, b in zip(decided[False], decided[True])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="timed images per variant (plus 2 warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--patch", type=int, default=256,
                        help="patch size of the random-weight model: 256 = paper profile, 64 = demo profile")
    parser.add_argument("--model-dir", type=Path, help="paper-profile 'smh-ml train' folder (else random weights)")
    parser.add_argument("--accuracy-model-dir", type=Path, help="trained folder scored on --patch-dir's test set")
    parser.add_argument("--patch-dir", type=Path)
    parser.add_argument("--decode-check", nargs=2, type=Path, metavar=("ONNX", "PATCH_DIR"),
                        help="full vs reduced JPEG decoding: accuracy on PATCH_DIR's held-out capture files")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # child process: one variant
        spec = json.loads(args.spec.read_text())
        result = run_variant(args.worker, spec["models"], [Path(p) for p in spec["files"]], args.threads)
        print(json.dumps(result))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    with tempfile.TemporaryDirectory(prefix="smh-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        files = make_captures(tmp, args.images + 2)
        models = make_models(tmp, args.model_dir, files[:4], args.threads, args.patch)
        console.print(f"{len(files)} JPEG captures 3584 px high ({files[0].stat().st_size / 1e6:.1f} MB each), "
                      f"Inception-CNN {models['parameters']:,} parameters, patches {models['geometry']}, "
                      f"weights {models['weights']}, "
                      f"{args.threads} threads; set-up {time.perf_counter() - t0:.0f} s")
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"models": models, "files": [str(f) for f in files]}))
        results = []
        for variant in args.variants.split(","):
            out = subprocess.run([sys.executable, __file__, "--worker", variant, "--spec", str(spec),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        acc = None
        if args.accuracy_model_dir and args.patch_dir:
            acc = accuracies(args.accuracy_model_dir, args.patch_dir, tmp)
        check = decode_check(*args.decode_check) if args.decode_check else None
    base = next((r["images_per_s"] for r in results if r["variant"] == "torch-fp32"), None)
    table = Table("variant", "images/s", "patches/s", "x torch eager", "decode ms", "preprocess ms", "model ms",
                  "decide ms", "peak RSS MB", *(["held-out acc"] if acc else []))
    for r in results:
        ms = r["ms_per_image"] or {}
        precision = "ort-int8" if "int8" in r["variant"] else r["variant"].split("-overlap")[0].split("-draft")[0]
        table.add_row(r["variant"], f"{r['images_per_s']:.2f}", f"{r['patches_per_s']:.1f}",
                      f"{r['images_per_s'] / base:.2f}" if base else "-",
                      *(f"{ms[k]:.1f}" if ms else "-" for k in ("decode", "preprocess", "model", "decide")),
                      f"{r['peak_rss_mb']:.0f}",
                      *([f"{acc[precision]:.4f}" if "draft" not in r["variant"] else "see below"] if acc else []))
    console.print(table)
    if acc:
        console.print(f"accuracy: {acc['model']} on {acc['test_images']} held-out captures")
    if check:
        console.print(f"reduced-scale JPEG decoding, {check['model']} on {check['captures']} held-out capture files: "
                      f"accuracy {check['draft']:.4f} vs {check['full']:.4f} fully decoded; same decision on "
                      f"{check['same_decision']} of {check['captures']}")
    if args.json:
        args.json.write_text(json.dumps({"setup": {k: v for k, v in models.items() if k not in ("fp32", "int8")},
                                         "threads": args.threads, "results": results, "accuracy": acc,
                                         "decode_check": check},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
