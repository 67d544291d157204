"""End-to-end decision speed: image files on disk -> Algorithm 1 decisions (issue 7).

Not a test: it prints figures, with the CPU's features (AVX-512, VNNI, bf16) beside them.
Every variant runs in its own subprocess (a clean peak-memory reading, no warm caches
shared), on the same capture files:

  torch-fp32           decode, crop/resize/tile, torch eager, Algorithm 1, one after another
  ort-fp32             the same through onnxruntime (smh_ml.deploy.Engine)
  ort-fp32-overlap     ... decoding the next file on a second thread while the model runs
  ort-int8             int8 static quantization (smh_ml.export.quantization), per-tensor weight scales
  ort-int8-overlap     int8 with the overlap
  ort-int8-pc          int8 with per-channel weight scales
  ort-int8-islands     per-channel int8 with the head, the feature distance and everything
                       after the trunk kept in fp32 (smh_ml.export.quantization.fp32_islands)
  ort-int8-gated       the model folder's own model.int8.onnx, the file its precision gate accepted
  ort-fp32-draft       fp32, JPEGs decoded at a reduced DCT scale where the patch grid allows
  ort-fp32-draft-overlap  ... with the overlap
  ov-fp32              the same fp32 ONNX file on OpenVINO's CPU plugin, fp32 arithmetic
                       (smh_ml.deploy.openvino_runtime; needs the 'openvino' extra)
  ov-bf16              ... in bfloat16 where the CPU has it (OpenVINO's default there)
  ov-bf16-overlap      ... with the overlap
  ov-bf16-draft(-overlap)  bf16 with reduced-scale JPEG decoding (and the overlap)
  ov-int8-islands      the per-channel QDQ int8 file with fp32 islands, on OpenVINO

The model: ``--model-dir``, any ``smh-ml train`` folder (the model that ships: its own
``model.onnx`` with the threshold and preprocessing it was trained with), or else the
paper-profile Inception-CNN with random weights (speed only; ``--patch 64`` gives the same
network at 64 px). The files: ``--captures PATCH_DIR``, that patch set's held-out capture
files (real data), or else simulated JPEG captures 3584 px high (1700-px camera field,
products of several widths). int8 is calibrated on ``--patch-dir``'s stratified training
patches when given (as the pipeline does), else on the first files' patches.

Accuracy: with ``--model-dir`` and ``--patch-dir``, each precision is also scored on that
set's held-out test captures through the same Algorithm 1 and the model's decision rule.

    python benchmarks/inference_speed.py [--model-dir RUN] [--patch-dir P] [--captures P]
        [--images 24] [--threads 2] [--json out.json]
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

VARIANTS = ("torch-fp32", "ort-fp32", "ort-fp32-overlap", "ort-int8", "ort-int8-overlap", "ort-int8-pc",
            "ort-int8-islands", "ort-int8-islands-overlap", "ort-fp32-draft", "ort-fp32-draft-overlap")
OPENVINO = ("ov-fp32", "ov-bf16", "ov-bf16-overlap", "ov-bf16-draft", "ov-bf16-draft-overlap", "ov-int8-islands")
"""Variants on OpenVINO (asked for with --variants, or all of them with --openvino)."""
INT8 = {"ort-int8": "int8", "ort-int8-pc": "int8_pc", "ort-int8-islands": "int8_islands",
        "ort-int8-gated": "int8_gated"}
"""int8 variant (without "-overlap") -> its model file's key."""


def model_key(variant: str) -> str:
    """The model file a variant runs: ``fp32`` or one of :data:`INT8`'s values."""
    base = variant.removesuffix("-overlap").removesuffix("-draft")
    return INT8.get("ort-" + base.removeprefix("ov-").removeprefix("ort-"), "fp32")


def backend_of(variant: str) -> str:
    """The engine backend of a variant (smh_ml.deploy.engine.BACKENDS)."""
    if not variant.startswith("ov-"):
        return "onnxruntime"
    return "openvino-bf16" if variant.removesuffix("-overlap").removesuffix("-draft") == "ov-bf16" else "openvino"
CLASSES = ["defect-free", "blowhole", "break", "crack", "fray", "uneven"]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_captures(folder: Path, count: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    from smh_ml.data.simulate import CLEAN_CLASS, DEFECT_CLASSES, simulate_capture

    rng = np.random.default_rng(seed)
    labels = [CLEAN_CLASS, *DEFECT_CLASSES]
    paths = []
    for i in range(count):
        capture = simulate_capture(labels[i % len(labels)], rng)
        path = folder / f"capture_{i:03d}.jpg"
        Image.fromarray(capture.image).save(path, quality=95)
        paths.append(path)
    return paths


def held_out(patch_dir: Path) -> tuple[list[Path], list[str]]:
    """A patch set's held-out capture files and their labels, each file checked to exist."""
    from smh_ml.data.datasets import load_captures

    test = load_captures(patch_dir).query("split == 'test'")
    paths = [Path(p) for p in test["path"]]
    if not paths:
        raise SystemExit(f"{patch_dir / 'captures.csv'}: no held-out capture files")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: held-out capture file not found ({len(missing)} missing)")
    return paths, test["label"].tolist()


def held_out_files(patch_dir: Path, count: int) -> list[Path]:
    """``count`` held-out capture files of a patch set, in order, repeated when it has fewer."""
    paths, _ = held_out(patch_dir)
    return [paths[i % len(paths)] for i in range(count)]


def make_models(folder: Path, model_dir: Path | None, calibration: np.ndarray | None, calibration_files: list[Path],
                threads: int, patch: int = 256) -> dict:
    """The fp32 ONNX file (the trained folder's own, or a random-weight export) and its int8
    versions (per-tensor, per-channel, per-channel with fp32 islands), calibrated on
    ``calibration`` patches or else on the patches of ``calibration_files``."""
    import shutil

    import torch

    from smh_ml.data.patching import Geometry
    from smh_ml.deploy import Engine
    from smh_ml.deploy.card import ModelCard
    from smh_ml.export.onnx import export_onnx
    from smh_ml.export.quantization import quantize_int8
    from smh_ml.models import build, count_parameters

    torch.manual_seed(0)
    if model_dir is not None:
        from smh_ml.training.checkpoint import load_classifier
        model, report = load_classifier(model_dir)
        if not (model_dir / "model.onnx").is_file():
            raise SystemExit(f"{model_dir / 'model.onnx'}: the trained folder has no exported model")
        fp32 = Path(shutil.copy(model_dir / "model.onnx", folder / "model.onnx"))
        arch, geometry, weights = report["arch"], report["geometry"], f"trained ({model_dir})"
    else:
        arch, geometry = "inception_cnn", {"rows": 8, "cols": 2, "patch": patch}
        model, weights = build(arch, len(CLASSES), patch).eval(), "random (speed only)"
        torch.save(model.state_dict(), folder / "model.pt")
        fp32 = export_onnx(model, folder / "model.onnx", ModelCard(arch, tuple(CLASSES), Geometry(**geometry)))
    if calibration is None:
        engine = Engine(fp32, threads=threads, backend="onnxruntime")
        calibration = np.concatenate([engine.patches(_read(p)) for p in calibration_files])
    int8 = quantize_int8(fp32, folder / "model.int8.onnx", calibration)
    int8_pc = quantize_int8(fp32, folder / "model.int8pc.onnx", calibration, per_channel=True)
    islands = quantize_int8(fp32, folder / "model.int8islands.onnx", calibration, per_channel=True, islands=True)
    gated = model_dir / "model.int8.onnx" if model_dir is not None else None
    gated = str(shutil.copy(gated, folder / "model.int8gated.onnx")) if gated and gated.is_file() else None
    return {"weights": weights, "arch": arch, "model_dir": str(model_dir) if model_dir else None,
            "geometry": geometry, "fp32": str(fp32), "int8": str(int8), "int8_pc": str(int8_pc),
            "int8_islands": str(islands), "int8_gated": gated,
            "parameters": count_parameters(model), "calibration_patches": int(len(calibration))}


def _read(path: Path) -> np.ndarray:
    from smh_ml.data.captures import read_gray
    return read_gray(path, convert=True)


def run_variant(variant: str, models: dict, files: list[Path], threads: int, warmup: int = 2,
                draft_margin: float = 2.0) -> dict:
    """One variant over ``files`` (after ``warmup`` files); images/s and per-stage ms."""
    from smh_ml.deploy import Engine, to_input

    path = models[model_key(variant)]
    engine = Engine(path, threads=threads, fast_decode="draft" in variant, backend=backend_of(variant))
    engine.decode_margin = draft_margin
    stages = {"decode": 0.0, "preprocess": 0.0, "model": 0.0, "decide": 0.0}
    if variant == "torch-fp32":
        import torch

        from smh_ml.models import build
        torch.set_num_threads(threads)
        if models["model_dir"]:
            from smh_ml.training.checkpoint import load_classifier
            model, _ = load_classifier(models["model_dir"])
        else:
            model = build(models["arch"], len(CLASSES), models["geometry"]["patch"])
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


def accuracies(models: dict, patch_dir: Path, clean_class: str, openvino: tuple[str, ...] = ()) -> dict:
    """Held-out Algorithm 1 accuracy of the trained model in torch and in each ONNX file,
    with the decision rule it ships with (its calibrated threshold, when it has one), and
    of the ``openvino`` variants."""
    from smh_ml.data.datasets import load_patch_set
    from smh_ml.export.quantization import onnx_accuracy
    from smh_ml.training.checkpoint import load_classifier
    from smh_ml.training.loop import class_names, evaluate_images, test_patches

    model, report = load_classifier(models["model_dir"])
    patch_set = load_patch_set(patch_dir)
    names = class_names(set(patch_set.captures["label"]), clean_class)
    captures, groups = test_patches(patch_set)
    threshold = report.get("decision", {}).get("threshold")
    torch_acc = evaluate_images(model, captures, groups, names, threshold=threshold)["accuracy"]
    out = {"model": models["model_dir"], "test_images": len(groups), "torch-fp32": float(torch_acc),
           **{name: onnx_accuracy(models[key], patch_set, clean_class)[0]
              for name, key in (("ort-fp32", "fp32"), *INT8.items()) if models.get(key)}}
    for variant in [v for v in openvino if not v.endswith(("-overlap", "-draft"))]:  # draft: --decode-check
        from smh_ml.deploy import Engine

        engine = Engine(models[model_key(variant)], backend=backend_of(variant))
        out[variant] = float(evaluate_images(engine.probabilities, captures, groups, names,
                                             threshold=threshold)["accuracy"])
    return out


def decode_check(onnx_path: Path, patch_dir: Path, draft_margin: float = 2.0) -> dict:
    """Full vs reduced-scale JPEG decoding on a patch set's held-out capture FILES: accuracy
    of each and how many decisions agree (the trained model of that set)."""
    from smh_ml.deploy import Engine

    files, truth = held_out(patch_dir)
    out = {"model": str(onnx_path), "captures": len(files)}
    decided = {}
    for fast in (False, True):
        engine = Engine(onnx_path, fast_decode=fast, backend="onnxruntime")
        engine.decode_margin = draft_margin
        decided[fast] = [p.decision.label for p in engine.decide_paths(files)]
        out["draft" if fast else "full"] = float(np.mean([a == b for a, b in zip(decided[fast], truth)]))
    out["same_decision"] = int(sum(a == b for a, b in zip(decided[False], decided[True])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="timed images per variant (plus 2 warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--openvino", action="store_true", help="also the OpenVINO variants: " + ", ".join(OPENVINO))
    parser.add_argument("--patch", type=int, default=256,
                        help="patch size of the random-weight model: 256 = paper profile, 64 = demo profile")
    parser.add_argument("--model-dir", type=Path, help="an 'smh-ml train' folder (else random weights)")
    parser.add_argument("--patch-dir", type=Path, help="the model's patch set: int8 calibration and accuracy")
    parser.add_argument("--captures", type=Path, metavar="PATCH_DIR",
                        help="time on this patch set's held-out capture files (else simulated JPEGs)")
    parser.add_argument("--clean-class", default="defect-free")
    parser.add_argument("--decode-check", nargs=2, type=Path, metavar=("ONNX", "PATCH_DIR"),
                        help="full vs reduced JPEG decoding: accuracy on PATCH_DIR's held-out capture files")
    parser.add_argument("--draft-margin", type=float, default=2.0,
                        help="draft variants: decode at a reduced DCT scale only when the reduced frame keeps "
                             "this many times the patch grid (the engine's default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # child process: one variant
        spec = json.loads(args.spec.read_text())
        result = run_variant(args.worker, spec["models"], [Path(p) for p in spec["files"]], args.threads,
                             draft_margin=spec.get("draft_margin", 2.0))
        print(json.dumps(result))
        return

    from rich.console import Console
    from rich.table import Table

    from smh_ml.hardware import describe

    console, hardware = Console(width=170), describe()
    with tempfile.TemporaryDirectory(prefix="smh-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.captures:
            files, source = held_out_files(args.captures, args.images + 2), f"held-out capture files of {args.captures}"
        else:
            files, source = make_captures(tmp, args.images + 2), "simulated JPEG captures 3584 px high"
        calibration = None
        if args.patch_dir:
            from smh_ml.data.datasets import load_patch_set
            from smh_ml.export.quantization import calibration_patches
            calibration = calibration_patches(load_patch_set(args.patch_dir), 512)
        models = make_models(tmp, args.model_dir, calibration, files[:4], args.threads, args.patch)
        console.print(f"{len(files)} {source} ({files[0].stat().st_size / 1e6:.2f} MB the first), "
                      f"{models['arch']} {models['parameters']:,} parameters, patches {models['geometry']}, "
                      f"weights {models['weights']}, int8 calibrated on {models['calibration_patches']} patches, "
                      f"{args.threads} threads; set-up {time.perf_counter() - t0:.0f} s")
        console.print(f"CPU: {hardware}")
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"models": models, "files": [str(f) for f in files],
                                    "draft_margin": args.draft_margin}))
        results = []
        variants = args.variants.split(",") + (list(OPENVINO) if args.openvino else [])
        if any(v.startswith("ort-int8-gated") for v in variants) and not models["int8_gated"]:
            raise SystemExit(f"ort-int8-gated: {args.model_dir} holds no model.int8.onnx (the precision gate "
                             "refused int8, or never ran)")
        for variant in variants:
            out = subprocess.run([sys.executable, __file__, "--worker", variant, "--spec", str(spec),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        acc = (accuracies(models, args.patch_dir, args.clean_class, tuple(v for v in variants if v.startswith("ov-")))
               if args.model_dir and args.patch_dir else None)
        check = decode_check(*args.decode_check, args.draft_margin) if args.decode_check else None
    base = next((r["images_per_s"] for r in results if r["variant"] == "torch-fp32"), None)
    table = Table("variant", "images/s", "patches/s", "x torch eager", "decode ms", "preprocess ms", "model ms",
                  "decide ms", "peak RSS MB", *(["held-out acc"] if acc else []))
    for r in results:
        ms = r["ms_per_image"] or {}
        precision = r["variant"].removesuffix("-overlap").removesuffix("-draft")
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
        setup = {k: v for k, v in models.items() if k not in ("fp32", *INT8.values())}
        args.json.write_text(json.dumps({"setup": setup, "files": source, "hardware": hardware,
                                         "threads": args.threads, "results": results, "accuracy": acc,
                                         "decode_check": check},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
