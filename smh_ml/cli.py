"""The ``smh-ml`` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from smh_ml.tracking.tracker import DEFAULT_ARTIFACT_ROOT, DEFAULT_MODEL_URI, DEFAULT_TRACKING_URI

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Surface-defect recognition for servo motor housings: data, patches, models.")
console = Console()
err = Console(stderr=True)


def _log_info() -> None:
    """INFO logs of our own (training curves); the ONNX exporter's pass-by-pass chatter stays quiet."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _profile(name: str, settings: list[str] | None = None):
    from smh_ml.config.overrides import apply_settings
    from smh_ml.config.presets import get_profile
    try:
        return apply_settings(get_profile(name), settings or [])
    except (KeyError, ValueError) as exc:
        _fail(str(exc.args[0]))


def _folder_profile(name: str, settings: list[str] | None, patch_dir: Path):
    """The profile a stage after patching runs under: ``auto`` reads the one the patch folder
    was built with (smh_ml.data.recipe), a named profile is taken as it is."""
    from smh_ml.data.recipe import profile_for_folder
    try:
        return profile_for_folder(_profile(name, settings), patch_dir)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))


BACKEND_HELP = ("What runs the ONNX model: auto (default: openvino-bf16 where the model's precision gate "
                "accepted it and the CPU has native bf16, else onnxruntime), onnxruntime, openvino (fp32) or "
                "openvino-bf16 (the 'openvino' extra, docs/DEPLOY.md).")
PROFILE_HELP = "Profile: auto (the recipe from the data; default) or a named one (smh-ml profiles)."
SETTINGS_HELP = "Override a profile value, e.g. --set patching.patch=128 (repeatable; JSON values)."


def _classes(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


@app.command()
def profiles() -> None:
    """List the configuration profiles."""
    from smh_ml.config.presets import PROFILES
    table = Table("profile", "patch", "tiles", "resize", "description")
    from smh_ml.data.recipe import is_auto
    for p in PROFILES.values():
        size = "x".join(map(str, p.patching.image_size)) if p.patching.image_size else "Eq. 5-7"
        if is_auto(p):
            table.add_row(p.name, "derived", "derived", "derived", p.description)
            continue
        table.add_row(p.name, str(p.patching.patch), str(p.patching.tiles), size, p.description)
    console.print(table)


@app.command()
def simulate(dest: Path = typer.Argument(..., help="Capture root to create."),
             seed: int = typer.Option(0, help="Random seed; the same seed gives the same set."),
             profile: str = typer.Option("paper", help="Profile whose count and scale are defaults."),
             count: int | None = typer.Option(None, help="Number of captures."),
             scale: float | None = typer.Option(None, help="Linear scale; 1.0 = 3584 px high."),
             image_format: str = typer.Option("jpg", "--format", help="jpg (default) or png."),
             overwrite: bool = typer.Option(False, help="Replace an existing capture root.")) -> None:
    """Write SIMULATED line-scan captures (not real data) in the capture-folder convention."""
    from smh_ml.data.simulate import simulate_captures
    cfg = _profile(profile).simulate
    start = time.perf_counter()
    try:
        counts = simulate_captures(dest, seed=seed, count=count or cfg.count,
                                   scale=scale if scale is not None else cfg.scale,
                                   image_format=image_format, overwrite=overwrite)
    except (FileExistsError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"SIMULATED captures written to {dest} in {time.perf_counter() - start:.1f} s: "
                  + ", ".join(f"{k}={v}" for k, v in counts.items()))


@app.command("import")
def import_(kind: str = typer.Argument(..., help="Dataset layout: magnetic-tile or voc (also in split folders)."),
            src: Path = typer.Argument(..., help="Folder of the dataset as published."),
            dest: Path = typer.Argument(..., help="Capture root to create."),
            clean_class: str = typer.Option("defect-free", help="Name of the clean class."),
            overwrite: bool = typer.Option(False, help="Replace an existing capture root.")) -> None:
    """Import a public dataset into the capture-folder convention."""
    from smh_ml.data.captures import CaptureError
    from smh_ml.data.importers import import_dataset
    try:
        counts = import_dataset(kind, src, dest, clean_class=clean_class, overwrite=overwrite)
    except (CaptureError, FileExistsError) as exc:
        _fail(str(exc))
    except KeyError as exc:
        _fail(str(exc.args[0]))
    console.print(f"imported {sum(counts.values())} captures into {dest}: "
                  + ", ".join(f"{k}={v}" for k, v in counts.items()))


def _validated_manifest(root: Path, profile, classes):
    from smh_ml.data.captures import CaptureError, load_manifest
    from smh_ml.data.validation import validate_manifest
    try:
        manifest = load_manifest(root)
    except CaptureError as exc:
        _fail(str(exc))
    report = validate_manifest(manifest, profile, classes)
    return manifest, report


@app.command()
def validate(root: Path = typer.Argument(..., help="Capture root."),
             profile: str = typer.Option("auto", help=PROFILE_HELP),
             classes: str | None = typer.Option(None, help="Declared classes, comma-separated.")) -> None:
    """Validate a capture set (Great Expectations); exit 1 listing every bad file."""
    _, report = _validated_manifest(root, _profile(profile), _classes(classes))
    (console if report.success else err).print(report.format(), highlight=False, soft_wrap=True)
    if not report.success:
        raise typer.Exit(1)


@app.command()
def patches(root: Path = typer.Argument(..., help="Capture root."),
            out: Path = typer.Argument(..., help="Output folder (replaced atomically)."),
            profile: str = typer.Option("auto", help=PROFILE_HELP),
            classes: str | None = typer.Option(None, help="Declared classes, comma-separated."),
            settings: list[str] = typer.Option([], "--set", help=SETTINGS_HELP)) -> None:
    """Validate captures, measure them (auto: the recipe from the data), split by capture, cut
    patches, build P-TA and O-TA, validate them."""
    from smh_ml.data.captures import CaptureError
    from smh_ml.data.datasets import ALTERNATE, build_datasets, save_built
    from smh_ml.data.validation import validate_patch_sets
    prof = _profile(profile, settings)
    start = time.perf_counter()
    manifest, report = _validated_manifest(root, prof, _classes(classes))
    if not report.success:
        _fail(report.format())
    try:
        built = build_datasets(manifest, prof)
    except (CaptureError, ValueError) as exc:
        _fail(f"{exc}\nnothing written; {out} is unchanged")
    prof, recipe, patch_set = built.profile, built.recipe, built.patch_set
    if recipe is not None:
        console.print(f"recipe from the data ({recipe.geometry}, {recipe.tiles} tile(s) of {recipe.patch} px, "
                      f"candidates {', '.join(prof.train.architectures())}):", highlight=False)
        for reason in recipe.reasons:
            console.print(f"  - {reason}", highlight=False, soft_wrap=True)
    for part in built.all():
        checked = validate_patch_sets(part.patch_set, {"pta": part.pta, "ota": part.ota}, part.profile.clean_class)
        if not checked.success:
            _fail(checked.format() + f"\nnothing written; {out} is unchanged")
    stats = save_built(out, built)
    g = patch_set.geometry
    table = Table("class", "train captures", "test captures", "train patches", "test patches",
                  "P-TA", "O-TA", title=f"{root} -> {out} ({prof.name}: {g.rows}x{g.cols} "
                                         f"patches of {g.patch} px, resize {g.size[0]}x{g.size[1]})")
    for label in sorted(set(stats["pta"]) | set(stats["ota"]) | set(stats["captures"]["train"])):
        table.add_row(label, *(str(stats[kind][split].get(label, 0))
                                for kind in ("captures", "patches") for split in ("train", "test")),
                      str(stats["pta"].get(label, 0)), str(stats["ota"].get(label, 0)))
    console.print(table)
    if built.alternate is not None:
        alt = built.alternate
        ga = alt.patch_set.geometry
        console.print(f"close call: {out / ALTERNATE} holds the other geometry, {ga.rows}x{ga.cols} patches of "
                      f"{ga.patch} px (P-TA {len(alt.pta.arrays)}), for {', '.join(alt.profile.train.architectures())}",
                      highlight=False, soft_wrap=True)
    console.print(f"ambiguous patches left out of training: {stats['ambiguous_patches']}; "
                  f"{time.perf_counter() - start:.1f} s")


@app.command()
def train(patch_dir: Path = typer.Argument(..., help="Output folder of 'smh-ml patches'."),
          out: Path = typer.Argument(..., help="Folder for the model, ONNX file and report."),
          profile: str = typer.Option("auto", help=PROFILE_HELP),
          arch: str | None = typer.Option(None, help="Train only this architecture (default: the profile's "
                                                     "candidates, the best on validation captures ships)."),
          steps: int | None = typer.Option(None, help="Override the profile's budget of optimiser steps."),
          epochs: int | None = typer.Option(None, help="Train for this many passes instead of a step budget."),
          folds: int | None = typer.Option(None, help="Override the profile's CV folds."),
          train_set: str | None = typer.Option(None, help="pta (default) or pgan."),
          train_dir: Path | None = typer.Option(None, help="Folder holding the training set "
                                                           "(e.g. the output of 'smh-ml pgan')."),
          cv: bool = typer.Option(True, help="Run k-fold cross-validation first."),
          robustness: bool = typer.Option(True, help="Accuracy under perturbations."),
          precision_gate: bool = typer.Option(True, help="Judge int8 and OpenVINO bf16 against fp32 on the "
                                                         "validation captures (the model card keeps the verdicts)."),
          settings: list[str] = typer.Option([], "--set", help=SETTINGS_HELP)) -> None:
    """Cross-validate, train, test (Algorithm 1 on held-out captures) and export a classifier."""
    from smh_ml.workflows.classifier import run_classifier

    _log_info()
    from smh_ml.config.overrides import with_overrides
    from smh_ml.models import list_models

    if steps is not None and epochs is not None:
        _fail("--steps and --epochs exclude each other")
    if steps is not None or epochs is not None:  # an explicit budget is every candidate's
        settings = [*settings, "train.scale_steps=false"]
    overrides = {k: v for k, v in {"train.arch": arch, "train.steps": 0 if epochs is not None else steps,
                                   "train.epochs": epochs, "train.cv_folds": folds,
                                   "train.train_set": train_set}.items()
                 if v is not None}
    if arch is not None and arch not in list_models():
        _fail(f"unknown architecture {arch!r}; known: {', '.join(list_models())}")
    if not (patch_dir / "geometry.json").exists():
        _fail(f"{patch_dir}: not a patch-set folder (run 'smh-ml patches' first)")
    prof = with_overrides(_folder_profile(profile, settings, patch_dir), overrides)
    if prof.patching.patch != json.loads((patch_dir / "geometry.json").read_text())["patch"]:
        _fail(f"{patch_dir}: its patches are not of profile {prof.name!r}'s {prof.patching.patch} px; build it "
              f"with that profile or train with the profile it was built with (the default, auto)")
    report = run_classifier(patch_dir, out, prof, cv=cv, robustness=robustness, train_dir=train_dir,
                            archs=[arch] if arch else None, overrides=overrides, precision_gate=precision_gate)
    test, image, fit = report.test, report.test["image"], report.fit
    if report.recipe is not None:
        console.print(f"recipe from the data: {report.recipe['geometry']}, {report.recipe['tiles']} tile(s) of "
                      f"{report.recipe['patch']} px ({'; '.join(report.recipe['reasons'][1:-1])})",
                      highlight=False, soft_wrap=True)
    if report.budget is not None:
        b = report.budget
        console.print(f"budget {b['budget_minutes']:g} min (warm-up {b['warmup_seconds']:.0f} s): "
                      + "; ".join(b["reasons"]), highlight=False, soft_wrap=True)
    if report.selection is not None and len(report.selection.get("scores", {})) > 1:
        sel = report.selection
        console.print(f"shipped {sel['best']}, chosen by {sel['metric']}: "
                      + ", ".join(f"{a} {v:.4f}" for a, v in sel["scores"].items()), highlight=False)
    rule = (f"threshold {report.threshold:.4g} (false alarms <= "
            f"{report.decision['target_false_alarm']:.0%} on validation)"
            if test["rule"] == "threshold" else "arg-max Algorithm 1")
    table = Table("class", "precision", "recall", "F1", "support",
                  title=f"{report.arch}: held-out image accuracy {test['accuracy']:.4f} on {test['n']} "
                        f"captures, {rule}")
    for name, m in test["per_class"].items():
        table.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                      str(m["support"]))
    console.print(table)
    lines = [f"majority-class baseline {image['majority_baseline']:.4f}; AUROC (defect vs clean) {image['auroc']:.4f}"]
    if "argmax" in test:
        lines.append(f"at the threshold: defect recall {image['defect_recall']:.4f}, false alarms "
                     f"{image['false_alarm_rate']:.4f}; the paper's arg-max rule: accuracy "
                     f"{test['argmax']['accuracy']:.4f}")
    if report.cv is not None:
        s = report.cv["summary"]
        lines.append(f"{report.cv['k']}-fold CV patch accuracy: all {s['all']['mean_accuracy']:.4f} "
                     f"+- {s['all']['std_accuracy']:.4f}, real patches only "
                     f"{s['real_only']['mean_accuracy']:.4f} +- {s['real_only']['std_accuracy']:.4f}")
    lines.append(f"training: {fit['steps']} steps (best {fit['best_step']}), {fit['precision']}, "
                 f"{fit['patches_per_second']:.0f} patches/s on {report.hardware['cpu']} "
                 f"(avx512 {report.hardware['avx512']}, bf16 {report.hardware['bf16']})")
    lines.append(f"parameters {report.parameters:,}; ONNX parity max |diff| "
                 f"{report.onnx['parity_max_abs_diff']:.2e}; {sum(report.seconds.values()):.0f} s; -> {out}")
    if report.int8 is not None and report.bf16 is not None:
        gate = report.int8
        lines.append(f"precision gate ({gate['captures']} {gate['split']} captures, fp32 {gate['fp32_accuracy']:.4f}): "
                     f"int8 {'accepted' if gate['accepted'] else 'refused'} ({gate['int8_accuracy']:.4f}); "
                     f"bf16 {'accepted' if report.bf16['accepted'] else 'refused'} ({report.bf16['reason']})")
    for line in lines:
        console.print(line, highlight=False)


@app.command()
def gan(patch_dir: Path = typer.Argument(..., help="Output folder of 'smh-ml patches'."),
        out: Path = typer.Argument(..., help="GAN folder; one subfolder per kind and class."),
        profile: str = typer.Option("auto", help=PROFILE_HELP),
        kind: str = typer.Option("sdg", help="sdg (SDG-GAN, WGAN-GP) or dcgan (baseline)."),
        classes: str | None = typer.Option(None, help="Defect classes (default: all)."),
        steps: int | None = typer.Option(None, help="Override the profile's GAN budget (generator steps)."),
        domain_model: Path | None = typer.Option(None, help="'smh-ml train' output folder whose "
                                                            "classifier gives domain FID/KID."),
        inception_weights: Path | None = typer.Option(None, help="Local FID Inception weights "
                                                                 "(pt_inception-2015-12-05)."),
        imagenet: bool = typer.Option(True, help="Also score with EfficientNet-Lite0's ImageNet features "
                                                 "(imagenet-efficientnet-lite0)."),
        fresh: bool = typer.Option(False, "--fresh", help="Train every class again, even one whose GAN is current."),
        settings: list[str] = typer.Option([], "--set", help=SETTINGS_HELP)) -> None:
    """Train one GAN per defect class, score it (FID/KID) and write its synthetic patches.
    A class whose GAN folder was computed from the same settings, patches and extractors is
    reused, so a stopped run resumes at the first class it had not finished."""
    from smh_ml.config.overrides import with_overrides
    from smh_ml.data.datasets import load_patch_set, patch_set_id
    from smh_ml.io import atomic_write_text
    from smh_ml.synthetic.pgan import defect_classes
    from smh_ml.workflows.gans import class_gan, gan_extractors

    _log_info()
    if kind not in ("sdg", "dcgan"):
        _fail(f"unknown GAN kind {kind!r}; known: sdg, dcgan")
    prof = _folder_profile(profile, settings, patch_dir)
    if steps is not None:
        prof = with_overrides(prof, {"gan.steps": steps})
    patch_set = load_patch_set(patch_dir)
    labels = _classes(classes) or defect_classes(patch_set, prof.clean_class)
    extractors, extractor_ids = gan_extractors(domain_model, imagenet, inception_weights)
    table = Table("class", "GAN", "real", "steps (best)", "train s", *(f"{n} FID" for n in extractors),
                  *(f"{n} KID x1e3" for n in extractors), "synthetic")
    rows, set_id = [], patch_set_id(patch_dir)
    for label in labels:
        step = class_gan(patch_set, set_id, label, kind, out / kind, prof, extractors, extractor_ids, fresh)
        if step.reused:
            console.print(f"{label}: reused the {kind} GAN in {out / kind / label} (its inputs are unchanged)")
        result = step.result
        rows.append(result)
        scores = {s["extractor"]: s for s in result["scores"]}
        if result.get("skipped"):
            console.print(f"{label}: no GAN: {result['skipped']}")
        table.add_row(label, kind, str(result["real_patches"]), f"{result['steps']} ({result['best_step']})",
                      f"{result['train_seconds']:.0f}",
                      *(f"{scores[n]['fid']:.2f}" if n in scores else "-" for n in extractors),
                      *(f"{1e3 * scores[n]['kid_mean']:.2f} +- {1e3 * scores[n]['kid_std']:.2f}" if n in scores
                        else "-" for n in extractors), str(result["synthetic"]))
    atomic_write_text(out / kind / "summary.json", json.dumps(
        [{k: v for k, v in r.items() if k != "history"} for r in rows], indent=1) + "\n")
    console.print(table)


@app.command()
def pgan(patch_dir: Path = typer.Argument(..., help="Output folder of 'smh-ml patches'."),
         gan_dir: Path = typer.Argument(..., help="One kind's GAN folder, e.g. gans/sdg."),
         out: Path = typer.Argument(..., help="Folder to write pgan/ into."),
         profile: str = typer.Option("auto", help=PROFILE_HELP)) -> None:
    """Assemble P-GAN: real TRAIN patches plus the synthetic patches that passed the validation
    trial (two fits of the profile's classifier, without and with every class's patches that
    passed the content checks; gan.trial=false in the profile keeps what the quality gate
    admitted). The two fits are kept in OUT/trial for 'smh-ml train --train-dir OUT' to reuse."""
    from smh_ml.data.datasets import load_patch_set
    from smh_ml.synthetic.pgan import save_training_set
    from smh_ml.workflows.trial import TRIAL_FITS, trial_pgan

    prof = _folder_profile(profile, None, patch_dir)
    classes = sorted(p.parent.name for p in gan_dir.glob("*/synthetic"))
    if not classes:
        _fail(f"{gan_dir}: no <class>/synthetic folders (train the GANs first: smh-ml gan)")
    pgan_set, trial = trial_pgan(load_patch_set(patch_dir), gan_dir, classes, prof, keep=out / TRIAL_FITS)
    save_training_set(out / "pgan", pgan_set)
    if trial is not None:
        trial.save(out / "trial.json")
        console.print(f"validation trial: {trial.reason}")
    counts = pgan_set.index.groupby(["label", "origin"]).size()
    console.print(f"P-GAN written to {out / 'pgan'}:")
    console.print(counts.to_string())


@app.command("copy-paste")
def copy_paste_cmd(patch_dir: Path = typer.Argument(..., help="Output folder of 'smh-ml patches'."),
                   out: Path = typer.Argument(..., help="Folder to write pgan/ (and each class's set) into."),
                   profile: str = typer.Option("auto", help=PROFILE_HELP),
                   settings: list[str] = typer.Option([], "--set", help=SETTINGS_HELP)) -> None:
    """The training-free baseline of P-GAN: real defect crops of the TRAIN captures pasted onto clean
    TRAIN patches in place of generated defects (train on it with --train-set pgan --train-dir OUT)."""
    from smh_ml.data.datasets import load_patch_set
    from smh_ml.synthetic.copy_paste import build_copy_paste
    from smh_ml.synthetic.pgan import save_training_set

    prof = _folder_profile(profile, settings, patch_dir)
    if prof.gan.source != "defects":
        _fail(f"profile {prof.name!r} has gan.source={prof.gan.source!r}: copy-paste needs defect crops "
              "(--set gan.source=defects)")
    training_set = build_copy_paste(load_patch_set(patch_dir), prof, out)
    save_training_set(out / "pgan", training_set)
    counts = training_set.index.groupby(["label", "origin"]).size()
    console.print(f"copy-paste set written to {out / 'pgan'}:")
    console.print(counts.to_string())


@app.command("data-version")
def data_version_cmd(dvc_file: Path = typer.Option(Path("data.dvc"))) -> None:
    """Print the current data version (the md5 in data.dvc)."""
    from smh_ml.data.versioning import DataVersionError, data_version
    try:
        version = data_version(dvc_file)
    except DataVersionError as exc:
        _fail(str(exc))
    if version is None:
        _fail(f"{dvc_file} tracks no data yet")
    console.print(version)


@app.command("data-commit")
def data_commit(repo: Path = typer.Option(Path(".")), target: str = typer.Option("data"),
                push: bool = typer.Option(True, help="dvc push to the default remote.")) -> None:
    """Record a new data version: dvc add the capture folder and dvc push it."""
    from smh_ml.data.versioning import DataVersionError, commit_data
    try:
        version = commit_data(repo, target, push)
    except DataVersionError as exc:
        _fail(str(exc))
    console.print(json.dumps({"data_version": version, "pushed": push}))


@app.command()
def serve(model: str = typer.Option(DEFAULT_MODEL_URI, help="Registry URI (models:/<name>@<alias>) or the folder "
                                                            "of a registered MLflow model."),
          tracking_uri: str | None = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                                  help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})."),
          host: str = typer.Option("127.0.0.1", help="Address to listen on (see docs/DEPLOY.md before exposing it)."),
          port: int = typer.Option(5000, help="Port."),
          workers: int = typer.Option(1, help="Worker processes, each deciding its own requests with its own copy "
                                              "of the model (more pay only with more cores than one model uses)."),
          max_body_mb: float = typer.Option(16.0, help="Largest request body accepted, MiB (413 above it).")) -> None:
    """Serve the model over REST as `mlflow models serve` does (/invocations, /ping), bounded:
    a body-size limit, the model card's pixel limit, several workers."""
    from smh_ml.tracking.serving import serve as run_server
    from smh_ml.tracking.tracker import resolve_model

    try:
        onnx_file = resolve_model(model, tracking_uri)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    folder = onnx_file.parent.parent if onnx_file.parent.name == "data" else onnx_file.parent
    if not (folder / "MLmodel").is_file():
        _fail(f"{model}: {folder} is not an MLflow model folder (no MLmodel file); serve a registered model")
    err.print(f"serving {model} ({folder}) on http://{host}:{port}/invocations with {workers} worker(s), "
              f"bodies up to {max_body_mb:g} MiB", highlight=False)
    try:
        run_server(str(folder), host, port, workers, int(max_body_mb * 2**20))
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def predict(inputs: list[Path] = typer.Argument(..., help="Capture images or folders (searched recursively)."),
            model: str = typer.Option(DEFAULT_MODEL_URI,
                                      help="Registry URI (models:/<name>@<alias>), an .onnx file, or a folder "
                                           "holding model.onnx."),
            tracking_uri: str | None = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                                    help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})."),
            int8: bool = typer.Option(False, help="Use the gated int8 model (model.int8.onnx) beside it."),
            json_out: bool = typer.Option(False, "--json", help="One JSON object per image, as a list."),
            heatmap: Path | None = typer.Option(None, help="Write <image>.png with per-patch defect "
                                                           "probability overlaid into this folder."),
            threshold: float | None = typer.Option(None, help="Defect probability threshold; default: the one "
                                                              "calibrated on validation captures and stored in "
                                                              "the model."),
            argmax: bool = typer.Option(False, "--argmax", help="The paper's plain Algorithm 1 (arg-max per "
                                                               "patch) instead of the calibrated threshold."),
            threads: int | None = typer.Option(None, help="onnxruntime threads (default: every core)."),
            fast_decode: bool = typer.Option(False, help="Decode JPEGs at a reduced scale when the patch grid "
                                                         "allows (faster; patches differ slightly)."),
            backend: str = typer.Option("auto", help=BACKEND_HELP)) -> None:
    """Decide each capture with Algorithm 1: its class, the deciding patch and its probability."""
    from smh_ml.deploy import Engine, image_files
    from smh_ml.evaluation.plots import decision_heatmap_png
    from smh_ml.tracking.tracker import resolve_model

    try:
        files = image_files(inputs)
        if argmax and threshold is not None:
            raise ValueError("--argmax and --threshold exclude each other")
        rule = None if argmax else ("model" if threshold is None else threshold)
        engine = Engine(resolve_model(model, tracking_uri, int8=int8), threads=threads, threshold=rule,
                        fast_decode=fast_decode, backend=backend)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    if not files:
        _fail("no capture images found in " + ", ".join(map(str, inputs)))
    cols = engine.geometry.cols
    rows, failed = [], 0
    start = time.perf_counter()
    for pred in engine.decide_paths(files):
        if pred.decision is None:
            failed += 1
            err.print(f"[bold red]error:[/] {pred.error}", highlight=False, soft_wrap=True)
            rows.append({"path": str(pred.path), "error": pred.error})
            continue
        d = pred.decision
        row = {"path": str(pred.path), "label": d.label, "verdict": d.verdict, "unknown_score": d.unknown_score,
               "patch": d.patch,
               "row": None if d.patch is None else d.patch // cols,
               "col": None if d.patch is None else d.patch % cols,
               "probability": round(d.probability, 6),
               "defect_probability": [round(p, 6) for p in d.defect_probability]}
        if pred.note:
            row["note"] = pred.note
        if heatmap is not None:
            where = "clean" if d.patch is None else f"patch {d.patch} (row {row['row']}, col {row['col']})"
            row["heatmap"] = str(decision_heatmap_png(
                engine.heatmap_image(pred.patches), d.defect_probability, engine.geometry.rows, cols,
                heatmap / f"{pred.path.stem}.png", f"{pred.path.name}: {d.label}, {where}, p={d.probability:.3f}",
                d.patch))
        rows.append(row)
    seconds = time.perf_counter() - start
    if json_out:
        print(json.dumps(rows, indent=1))
    else:
        table = Table("image", "class", "deciding patch", "probability", "verdict")
        for row in rows:
            if "error" in row:
                table.add_row(row["path"], "[red]error[/]", "-", "-", "-")
            else:
                where = "-" if row["patch"] is None else f"{row['patch']} (r{row['row']}, c{row['col']})"
                table.add_row(row["path"], row["label"], where, f"{row['probability']:.3f}",
                              "[yellow]unknown: review[/]" if row["verdict"] == "unknown" else row["verdict"])
        console.print(table)
        converted = sum(1 for row in rows if "note" in row)
        if converted:
            err.print(f"note: {converted} capture(s) converted to 8-bit grey before deciding (the 'note' of "
                      "each in --json)", highlight=False)
    rule_text = "arg-max rule" if engine.threshold is None else f"threshold {engine.threshold:.4g}"
    err.print(f"{len(rows) - failed} image(s) decided ({rule_text}) in {seconds:.2f} s "
              f"({(len(rows) - failed) / max(seconds, 1e-9):.1f} images/s, {engine.precision} on {engine.backend}, "
              f"{engine.path})", highlight=False, soft_wrap=True)
    if engine.recipe is not None:
        recipe = engine.recipe
        err.print(f"recipe {recipe['geometry']}: {recipe['tiles']} tile(s) of {recipe['patch']} px "
                  "(the recipe from the data the model was trained under)", highlight=False)
    if failed:
        raise typer.Exit(1)


def _draw_heatmap(row: dict, patches, geometry) -> bytes:
    """PNG bytes of one decision's heat map, as ``smh-ml predict --heatmap`` draws it."""
    import tempfile

    from smh_ml.data.patching import untile
    from smh_ml.evaluation.plots import decision_heatmap_png

    with tempfile.TemporaryDirectory() as tmp:
        return decision_heatmap_png(untile(patches, geometry.rows, geometry.cols), row["defect_probability"],
                                    geometry.rows, geometry.cols, Path(tmp) / "heat.png",
                                    f"{Path(row['path']).name}: {row['label']}", row.get("patch")).read_bytes()


@app.command()
def watch(folder: Path = typer.Argument(..., help="Folder the camera writes captures into (watched recursively)."),
          model: str = typer.Option(DEFAULT_MODEL_URI,
                                    help="Registry URI (models:/<name>@<alias>: followed when the alias moves), "
                                         "an .onnx file, or a folder holding model.onnx."),
          tracking_uri: str | None = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                                  help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})."),
          log: Path | None = typer.Option(None, help="Results log, one JSON line per capture (default "
                                                     "FOLDER/.smh-watch/decisions.jsonl; status.json beside it)."),
          route: Path | None = typer.Option(None, help="Copy each decided capture into ROUTE/<verdict>/."),
          review: Path | None = typer.Option(None, help="Copy each capture whose verdict is unknown (unlike every "
                                                        "trained class) into this folder, for labelling."),
          int8: bool = typer.Option(False, help="Use the gated int8 model beside the fp32 one."),
          settle: float = typer.Option(0.5, help="Seconds a file's size must stay unchanged before it is read."),
          reload_every: float = typer.Option(5.0, help="Seconds between checks that the model (alias) moved."),
          threads: int | None = typer.Option(None, help="onnxruntime threads (default: every core)."),
          backend: str = typer.Option("auto", help=BACKEND_HELP),
          max_captures: int | None = typer.Option(None, help="Stop after this many captures (decided or failed)."),
          idle_exit: float | None = typer.Option(None, help="Stop after this many seconds with nothing to decide."),
          status_port: int = typer.Option(8750, help="Port of the status page on 127.0.0.1 (0: a free one, "
                                                     "-1: no page).")) -> None:
    """Decide each capture once it is completely written, append the decision to a results log
    a line PC can tail, and follow the registry alias. A restart decides only what the log does
    not hold; a bad file gets an error line and the station goes on."""
    import signal
    import threading

    from smh_ml.deploy import Engine
    from smh_ml.deploy.watch import Station
    from smh_ml.tracking.tracker import RegistrySource

    log = log or folder / ".smh-watch" / "decisions.jsonl"
    try:
        station = Station(folder, RegistrySource(model, tracking_uri, int8), log,
                          engine=lambda path: Engine(path, threads=threads, backend=backend), route=route,
                          settle_seconds=settle, reload_seconds=reload_every, review=review,
                          on_decision=lambda row: console.print(
                              f"{row['path']}: " + (f"[red]error[/] {row['error']}" if "error" in row else
                                                    f"{row['verdict']} (p={row['probability']:.3f}, "
                                                    f"{row['latency_ms']:.0f} ms)"), highlight=False))
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    page = None
    if status_port >= 0:
        from smh_ml.deploy.status_page import StatusPage

        try:
            page = StatusPage(station.status, station.recent, _draw_heatmap, status_port).start()
        except OSError as exc:
            _fail(f"status page on 127.0.0.1:{status_port}: {exc} (choose another --status-port, or -1)")
    engine = station.engine
    err.print(f"watching {folder} with {station.version} ({engine.precision} on {engine.backend}); log {log}"
              + (f"; status page {page.url}" if page else ""), highlight=False)
    try:
        status = station.run(stop, max_captures=max_captures, idle_exit_seconds=idle_exit)
    except KeyboardInterrupt:
        status = station.write_status()
    finally:
        if page is not None:
            page.stop()
    err.print(f"{status['decided']} decided, {status['errors']} failed, {status['captures_per_second']} captures/s, "
              f"latency p50 {status['latency_ms_p50']} ms, p99 {status['latency_ms_p99']} ms, "
              f"{status['reloads']} model reload(s)", highlight=False)


@app.command()
def quantize(model_dir: Path = typer.Argument(..., help="'smh-ml train' output folder (holds model.onnx) or "
                                                        "an .onnx file."),
             patch_dir: Path = typer.Argument(..., help="Output folder of 'smh-ml patches': real training "
                                                        "patches to calibrate on and the validation captures."),
             profile: str = typer.Option("auto", help=PROFILE_HELP),
             tolerance: float | None = typer.Option(
                 None, help="Largest accuracy drop allowed (fraction); default: the profile's "
                            "deploy.int8_tolerance.")) -> None:
    """The precision gate: int8 static quantization, kept (model.int8.onnx) only within the accuracy
    tolerance of fp32 on the validation captures (the model folder's own split; the profile's for
    a bare file), and OpenVINO bf16 judged the same way (always at the profile's tolerance); both
    verdicts go into the model card, and into the folder's report.json."""
    import dataclasses

    from smh_ml.data.datasets import load_patch_set
    from smh_ml.export.precision_gate import validation_gate_captures
    from smh_ml.export.quantization import gate_fast_paths
    from smh_ml.workflows.classifier import REPORT, quantize_stage

    prof = _folder_profile(profile, None, patch_dir)
    onnx_path = model_dir / "model.onnx" if model_dir.is_dir() else model_dir
    if not onnx_path.is_file():
        _fail(f"{onnx_path}: no such ONNX model")
    if tolerance is not None and not tolerance >= 0:
        _fail(f"--tolerance {tolerance}: must be >= 0 (a fraction of accuracy)")
    patch_set = load_patch_set(patch_dir)
    cfg = prof.deploy
    try:
        if (onnx_path.parent / REPORT).is_file():  # a trained folder: its own split, its report updated
            folder_report = quantize_stage(onnx_path.parent, patch_set, cfg, prof.clean_class, tolerance)
            report, bf16 = folder_report.int8, folder_report.bf16
        else:
            gate = validation_gate_captures(patch_set, prof.clean_class, prof.train.val_fraction, prof.train.seed)
            gate = gate and dataclasses.replace(gate, split="validation (the profile's split)")
            result, verdict = gate_fast_paths(onnx_path, patch_set, prof.clean_class, gate, cfg, tolerance)
            report, bf16 = dataclasses.asdict(result), verdict.to_dict()
    except ValueError as exc:
        _fail(f"{patch_dir}: {exc}")
    console.print(json.dumps(report | {"bf16": bf16}, indent=1))
    err.print(f"bf16 {'accepted' if bf16['accepted'] else 'refused'}: {bf16['reason']}", highlight=False)
    if not report["accepted"]:
        err.print(f"int8 refused: {report['verdict']['reason']}; keep using fp32", highlight=False)
        raise typer.Exit(2)


@app.command()
def reproduce(patch_dir: Path = typer.Argument(..., help="Output folder of 'smh-ml patches'."),
              out: Path = typer.Argument(..., help="Results folder; an existing one is resumed."),
              profile: str = typer.Option("auto", help="auto (the profile the patch folder was built with; "
                                                       "default), bench (the paper's experiments on 2 CPU cores, "
                                                       "about two hours) or paper (GPU)."),
              experiments: str = typer.Option(",".join(("table6", "table8", "tables9_10", "fig13")),
                                              help="Comma-separated: table6, table8, tables9_10, fig13."),
              archs: str | None = typer.Option(None, help="Architectures for Tables 9-10 (default: all six)."),
              classes: str | None = typer.Option(None, help="Defect classes for Table 6 (default: all)."),
              inception_weights: Path | None = typer.Option(None, help="Local FID Inception weights for "
                                                                       "Inception FID/KID in Table 6."),
              imagenet: bool = typer.Option(True, help="Also score Table 6's GANs with EfficientNet-Lite0's "
                                                       "ImageNet features (imagenet-efficientnet-lite0)."),
              seeds: str | None = typer.Option(None, help="Classifier seeds for Table 8's patch sets, e.g. "
                                                          "0,1,2 (default: the profile's seed)."),
              tracking_uri: str = typer.Option(DEFAULT_TRACKING_URI, envvar="MLFLOW_TRACKING_URI"),
              artifact_root: Path = typer.Option(Path(DEFAULT_ARTIFACT_ROOT)),
              experiment: str = typer.Option("smh-reproduce", help="MLflow experiment name."),
              track: bool = typer.Option(True, help="Log every step to MLflow."),
              settings: list[str] = typer.Option([], "--set", help=SETTINGS_HELP)) -> None:
    """Re-run the paper's experiments (Tables 6, 8, 9-10, Fig. 13) on a patch set; writes results.json."""
    import contextlib

    from smh_ml.models import list_models
    from smh_ml.workflows.reproduce import Reproduction

    _log_info()
    prof = _folder_profile(profile, settings, patch_dir)
    chosen = _classes(experiments) or []
    try:
        seed_list = [int(s) for s in _classes(seeds) or []]
    except ValueError:
        _fail(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    run_context = contextlib.nullcontext()
    if track:
        from smh_ml.tracking.tracker import Tracker

        run_context = Tracker(tracking_uri, str(artifact_root), experiment).active_run(
            f"reproduce-{prof.name}", {"role": "reproduce", "patch_dir": str(patch_dir)})
    try:
        with run_context as tracker:
            repro = Reproduction(patch_dir, out, prof, tracker, inception_weights, imagenet)
            results = repro.run(chosen, _classes(archs) or list_models(), _classes(classes),
                                seed_list)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    table = Table("step", "key figures", "wall s", "MLflow run")
    for step, entry in results["steps"].items():
        figures = ", ".join(f"{k} {v:.4g}" for k, v in entry["metrics"].items() if isinstance(v, (int, float)))
        wall = entry.get("wall_seconds")
        table.add_row(step, figures, "-" if wall is None else f"{wall:.0f}", entry.get("run_id") or "-")
    console.print(table)
    from smh_ml.io import atomic_write_text
    from smh_ml.workflows.report import render_report

    atomic_write_text(out / "REPORT.md", render_report(out) + "\n")
    console.print(f"results: {out / 'results.json'}, report: {out / 'REPORT.md'}; "
                  f"this run {results['last_run_seconds']:.0f} s")


def main() -> None:  # console-script entry point
    sys.exit(app())


if __name__ == "__main__":
    main()
