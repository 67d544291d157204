"""The paper's experiments on one patch set, step by step and resumable (issue 6).

    table6      SDG-GAN vs DCGAN per defect class: domain and ImageNet (EfficientNet-Lite0;
                with local weights, also Inception) FID / KID beside the real-vs-real and
                augmented-vs-real yardsticks, the gate's verdict, wall time
    table8      baseline CNN on O-TA (whole images), P-TA, P-GAN and P-GAN without the gate:
                held-out accuracy and per-class precision / recall / F1, over one or more
                classifier seeds (mean +- std)
    tables9_10  k-fold CV and held-out accuracy, parameter count, for each architecture
    fig13       Inception-CNN accuracy under blur, noise, light and scratches

Every step writes its own folder under ``out`` atomically, then an ``inputs.json``
(:mod:`smh_ml.step_cache`) that records what it was computed from: its settings and the content ids of its data (patch
folder, training set, synthetic sets, domain extractor). A step whose folder is complete and
whose inputs are unchanged is not run again, so a stopped run resumes; a changed profile,
patch folder or upstream step re-runs it and everything downstream of it.
``track(step, params, metrics, folder)`` is called once per finished step and returns a run
id (the CLI logs to MLflow); ids are kept in ``results.json`` so a resumed run does not log
a step twice, and a re-run step is logged anew. The classifiers are
:func:`smh_ml.classifier_experiment.run_classifier`, as ``smh-ml train`` runs them; the
paper's numbers printed beside ours are data (``smh_ml/paper_tables.json``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from smh_ml.datasets import check_built_with, load_patch_set, patch_set_id, training_set_id
from smh_ml.io import atomic_write_text, files_digest
from smh_ml.models import ARCHITECTURES
from smh_ml.profiles import Profile
from smh_ml.step_cache import current, stamp, stamped
from smh_ml.synthetic_trial import TRIAL_FIELDS, TRIAL_SET, judge, on_trial, sample_ungated, validation_accuracy

log = logging.getLogger(__name__)

EXPERIMENTS = ("table6", "table8", "tables9_10", "fig13")
GAN_KINDS = ("sdg", "dcgan")
Tracker = Callable[[str, dict, dict, Path], str | None]


def _metric_summary(report: dict) -> dict[str, float]:
    seconds = report.get("seconds", 0.0)
    metrics = {"test_accuracy": report["test"]["accuracy"],
               "seconds": sum(seconds.values()) if isinstance(seconds, dict) else seconds}
    if report.get("cv"):
        for part in ("all", "real_only"):
            summary = report["cv"]["summary"][part]
            metrics |= {f"cv_{part}_mean": summary["mean_accuracy"], f"cv_{part}_std": summary["std_accuracy"]}
    if "parameters" in report:
        metrics["parameters"] = report["parameters"]
    return metrics


def check_profile(profile: Profile, experiments: Sequence[str] = EXPERIMENTS,
                  archs: Sequence[str] = ARCHITECTURES) -> None:
    """Build every network the chosen experiments will train, before any of them runs, so a
    profile whose sizes a network cannot take fails in seconds, not after the GANs."""
    from smh_ml.models import build
    from smh_ml.models.baseline_cnn import baseline_cnn

    try:
        if "table8" in experiments:
            height, width = profile.augment.ota_size
            baseline_cnn(2, width, height=height)
        for arch in (archs if "tables9_10" in experiments else ["inception_cnn"]):
            build(arch, 2, profile.patching.patch)
    except ValueError as exc:
        raise ValueError(f"profile {profile.name!r} (patching.patch {profile.patching.patch}, "
                         f"augment.ota_size {profile.augment.ota_size}): {exc}") from exc


class Reproduction:
    def __init__(self, patch_dir: Path | str, out: Path | str, profile: Profile, track: Tracker | None = None,
                 inception_weights: Path | str | None = None, imagenet: bool = True):
        self.patch_dir, self.out, self.profile = Path(patch_dir), Path(out), profile
        self.track, self.inception_weights, self.imagenet = track, inception_weights, imagenet
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.json"
        self.results: dict = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {}
        self.results["profile"] = profile.to_dict()
        self.results.setdefault("steps", {})
        self._patch_set = None
        self._patch_set_id: str | None = None

    @property
    def patch_set(self):
        if self._patch_set is None:
            self._patch_set = load_patch_set(self.patch_dir)
        return self._patch_set

    @property
    def patch_set_id(self) -> str:
        if self._patch_set_id is None:
            self._patch_set_id = patch_set_id(self.patch_dir)
        return self._patch_set_id

    def _record(self, step: str, params: dict, metrics: dict, folder: Path, seconds: float | None) -> None:
        # seconds None: reused from an earlier (resumed) run; otherwise a fresh result, whose
        # earlier entry (and MLflow run) described something else
        entry = self.results["steps"].get(step, {}) if seconds is None else {}
        entry |= {"folder": str(folder), "metrics": metrics, "params": params}
        if seconds is not None:
            entry["wall_seconds"] = seconds
        if self.track and not entry.get("run_id"):
            entry["run_id"] = self.track(step, params, metrics, folder)
        self.results["steps"][step] = entry
        atomic_write_text(self.results_path, json.dumps(self.results, indent=1) + "\n")

    # -- steps ---------------------------------------------------------------------------------
    def domain_extractor(self) -> Path:
        from smh_ml.experiments import train_domain_extractor

        folder = self.out / "domain"
        steps = self.profile.gan.domain_steps
        inputs = {"train": dataclasses.asdict(self.profile.train), "epochs": self.profile.gan.domain_epochs,
                  **({"steps": steps} if steps else {}),  # an epoch-sized extractor keeps its earlier stamp
                  "patch_set": self.patch_set_id, "pta": training_set_id(self.patch_dir, "pta")}
        if current(folder, inputs) is None:
            t0 = time.perf_counter()
            report = train_domain_extractor(self.patch_dir, folder, self.profile)
            stamp(folder, inputs)
            self._record("domain_extractor", {"arch": report["arch"], "steps": report["steps"]},
                         {"final_train_accuracy": report["history"][-1]["train_accuracy"]}, folder,
                         time.perf_counter() - t0)
        return folder

    def table6(self, classes: Sequence[str] | None = None) -> list[dict]:
        from smh_ml.experiments import load_classifier
        from smh_ml.fid import IMAGENET_NAME, extractor_for
        from smh_ml.gan.experiment import relative_fid_ceiling, run_class_gan
        from smh_ml.models.efficientnet_lite import imagenet_weights_path
        from smh_ml.synthetic import class_patches, defect_classes

        domain = self.domain_extractor()
        extractors = {"domain": extractor_for("domain", load_classifier(domain)[0])}
        extractor_ids = {"domain": files_digest([domain / "model.pt"])}
        if self.imagenet:
            extractors[IMAGENET_NAME] = extractor_for("imagenet")
            extractor_ids[IMAGENET_NAME] = files_digest([imagenet_weights_path()])
        if self.inception_weights:
            extractors["inception"] = extractor_for("inception", inception_weights=self.inception_weights)
            extractor_ids["inception"] = files_digest([self.inception_weights])
        rows = []
        for kind in GAN_KINDS:
            for label in classes or defect_classes(self.patch_set, self.profile.clean_class):
                folder = self.out / "gans" / kind / label
                # the trial's settings judge P-GAN downstream (table8), not this GAN or its gate
                gan = {k: v for k, v in dataclasses.asdict(self.profile.gan).items() if k not in TRIAL_FIELDS}
                inputs = {"gan": gan, "kind": kind, "class": label,
                          "patch_set": self.patch_set_id, "extractors": extractor_ids}
                scores, seconds = current(folder, inputs, "scores.json"), None
                if scores is None:
                    t0 = time.perf_counter()
                    scores = run_class_gan(class_patches(self.patch_set, label), label, kind,
                                           self.out / "gans" / kind, self.profile, extractors)
                    scores = {k: v for k, v in scores.items() if k != "history"}
                    seconds = time.perf_counter() - t0
                    stamp(folder, inputs)
                metrics = {f"{s['extractor']}_{m}": s[m] for s in scores["scores"] for m in ("fid", "kid_mean")}
                for yardstick in ("real_vs_real", "augmented_vs_real"):
                    metrics |= {f"{s['extractor']}_{yardstick}_fid": s["fid"] for s in scores.get(yardstick, [])}
                ceiling = relative_fid_ceiling(self.profile.gan, scores)
                if ceiling is not None:
                    metrics["gate_fid_ceiling"] = ceiling
                gate = json.loads((folder / "synthetic" / "gate.json").read_text())
                metrics |= {"train_seconds": scores["train_seconds"], "synthetic": gate["written"]}
                self._record(f"table6/{kind}/{label}", {"gan": kind, "class": label, "steps": scores["steps"],
                                                        "best_step": scores.get("best_step"),
                                                        "real_patches": scores["real_patches"],
                                                        "refused": gate["refused"], "gate": "; ".join(gate["reasons"])},
                             metrics, folder, seconds)
                rows.append({"gan": kind, "class": label, **metrics, "real_patches": scores["real_patches"],
                             "wall_seconds": self.results["steps"][f"table6/{kind}/{label}"].get("wall_seconds")})
        return rows

    def _pgan_dir(self, ungated: bool = False) -> Path | None:
        """P-GAN from the SDG-GAN synthetic sets (Table 6's GANs), when they exist: the folder
        holding ``pgan/``, after the quality gate and its validation trial (:meth:`_trial`).
        ``ungated``: every class gets its GAN's patches whether or not they pass the gate
        (``<class>/synthetic-ungated``, sampled from the saved generator), so Table 8 can show
        what the gate keeps out; this P-GAN lives under ``ungated/``."""
        gans = self.out / "gans" / "sdg"
        labels = sorted(p.parent.name for p in gans.glob("*/synthetic"))
        if not labels:
            return None
        if ungated:
            return self._write_pgan(self.out / "ungated", {label: TRIAL_SET for label in labels})
        gated = self._write_pgan(self.out, {label: "synthetic" for label in labels})
        return self._trial(gated, labels)

    def _write_pgan(self, root: Path, folders: dict[str, str]) -> Path:
        """``root/pgan`` from each class's ``<class>/<folders[class]>`` synthetic set (sampled
        ungated from the saved generator when it is :data:`TRIAL_SET`)."""
        from smh_ml.synthetic import build_pgan, read_synthetic, save_training_set

        gans = self.out / "gans" / "sdg"
        for label in [label for label, name in folders.items() if name == TRIAL_SET]:
            sample_ungated(self.patch_set, gans, label, self.profile.gan)
        synthetic = [gans / label / name for label, name in sorted(folders.items())]
        folder = root / "pgan"
        inputs = {"patch_set": self.patch_set_id, "clean_class": self.profile.clean_class,
                  "augment": dataclasses.asdict(self.profile.augment), "pgan_target": self.profile.gan.pgan_target,
                  "synthetic": files_digest(f for s in synthetic for f in sorted(s.iterdir()) if f.is_file())}
        if not (folder / "arrays.npy").is_file() or not stamped(folder, inputs):
            sets = {label: read_synthetic(gans / label / name) for label, name in folders.items()}
            save_training_set(folder, build_pgan(self.patch_set, sets, self.profile))
            stamp(folder, inputs)
        return root

    def _trial(self, gated: Path, labels: list[str]) -> Path:
        """The validation trial (:mod:`smh_ml.synthetic_trial`) of the classes the FID ceiling
        alone refused, judged by Table 8's classifier at the profile's seed: returns ``gated``, or
        the P-GAN with their patches (``trial/pgan``) when the trial admits them. The verdict is
        in ``trial/trial.json`` and REPORT.md."""
        classes = on_trial(self.out / "gans" / "sdg", labels, self.profile.gan)
        self.results.pop("trial", None)
        if not classes:
            self.results["steps"].pop("trial", None)
            return gated
        candidate = self._write_pgan(self.out / "trial", {label: TRIAL_SET if label in classes else "synthetic"
                                                          for label in labels})
        fits = [self._fit_only(self.out / "trial" / name, root) for name, root in
                (("without", gated), ("with", candidate))]
        result = judge(classes, *[report for report, _ in fits], self.profile.gan.trial_min_gain)
        fresh = any(trained for _, trained in fits)
        self.results["trial"] = result.to_dict()
        result.save(self.out / "trial" / "trial.json")
        self._record("trial", {"classes": ",".join(classes), "arch": result.arch, "min_gain": result.min_gain,
                               "admitted": result.admitted},
                     {"val_accuracy_without": result.without["accuracy"],
                      "val_accuracy_with": result.with_synthetic["accuracy"]}, self.out / "trial",
                     result.seconds if fresh else None)
        log.info("trial: %s", result.reason)
        return candidate if result.admitted else gated

    def _fit_only(self, folder: Path, train_dir: Path) -> tuple[dict, bool]:
        """Table 8's classifier fitted on ``train_dir``'s P-GAN, validation only (a trial never
        looks at the test captures): its report, and whether it was trained now (not reused)."""
        from smh_ml.classifier_experiment import ClassifierReport, fit_stage, save_fit
        from smh_ml.datasets import load_training_set
        from smh_ml.training import class_names

        train = dataclasses.replace(self.profile.train, arch="baseline_cnn", train_set="pgan")
        inputs = {"train": dataclasses.asdict(train), "patch_set": self.patch_set_id,
                  "pgan": training_set_id(train_dir, "pgan")}
        trained = current(folder, inputs) is None
        if trained:
            names = class_names(set(self.patch_set.captures["label"]), self.profile.clean_class)
            model, report = fit_stage(self.patch_set, load_training_set(train_dir, "pgan"), names,
                                      dataclasses.replace(self.profile, train=train), train, cv=False)
            save_fit(folder, model, report)
            stamp(folder, inputs)
        return ClassifierReport.load(folder).to_dict(), trained

    def _classifier(self, step: str, folder: Path, arch: str, train_set: str, train_dir: Path | None,
                    cv: bool, robustness: bool, seed: int | None = None) -> dict:
        from smh_ml.classifier_experiment import run_classifier

        seed = self.profile.train.seed if seed is None else seed
        train = dataclasses.replace(self.profile.train, arch=arch, train_set=train_set, seed=seed)
        inputs = {"train": dataclasses.asdict(train), "patch_set": self.patch_set_id,
                  train_set: training_set_id(train_dir or self.patch_dir, train_set)}
        report, seconds = current(folder, inputs), None
        if report is None or (cv and not report.get("cv")) or (robustness and not report.get("robustness")):
            profile = dataclasses.replace(self.profile, train=train)
            t0 = time.perf_counter()
            report = run_classifier(self.patch_dir, folder, profile, cv=cv, robustness=robustness,
                                    train_dir=train_dir).to_dict()
            seconds = time.perf_counter() - t0
            stamp(folder, inputs)
        self._record(step, {"arch": arch, "train_set": train_set, "cv": cv, "seed": seed, "steps": train.steps,
                            "epochs": train.epochs, "folds": train.cv_folds, "train_dir": str(train_dir or "")},
                     _metric_summary(report), folder, seconds)
        return report

    def table8(self, seeds: Sequence[int] | None = None) -> dict[str, dict]:
        """O-TA, P-TA, P-GAN and P-GAN without the gate, each patch set trained once per seed
        (the profile's seed first; the O-TA row with it only). Step names carry ``/seed<N>``
        for the other seeds."""
        from smh_ml.experiments import run_whole_image_classifier

        out: dict[str, dict] = {}
        folder = self.out / "table8" / "ota"
        inputs = {"train": dataclasses.asdict(self.profile.train), "patch_set": self.patch_set_id,
                  "ota": training_set_id(self.patch_dir, "ota")}
        report, seconds = current(folder, inputs), None
        if report is None:
            t0 = time.perf_counter()
            report = run_whole_image_classifier(self.patch_dir, folder, self.profile)
            seconds = time.perf_counter() - t0
            stamp(folder, inputs)
        self._record("table8/ota", {"arch": "baseline_cnn", "train_set": "ota"}, _metric_summary(report), folder,
                     seconds)
        out["ota"] = report
        pgan = self._pgan_dir()
        if pgan is None:
            log.warning("table8: no SDG-GAN synthetic sets under %s; P-GAN rows skipped (run table6)", self.out)
        # with every class through the gate, P-GAN without it is the same set: not trained twice
        ungated = self._pgan_dir(ungated=True) if pgan and any_refused(self.out / "gans" / "sdg") else None
        sets = [("pta", "pta", None)] + ([("pgan", "pgan", pgan)] if pgan else []) \
            + ([("pgan_ungated", "pgan", ungated)] if ungated else [])
        base = self.profile.train.seed
        for seed in [base, *[s for s in seeds or () if s != base]]:
            suffix = "" if seed == base else f"/seed{seed}"
            for name, train_set, train_dir in sets:
                folder = self.out / "table8" / (name if seed == base else f"seed{seed}/{name}")
                out[f"{name}{suffix}"] = self._classifier(f"table8/{name}{suffix}", folder, "baseline_cnn", train_set,
                                                          train_dir, cv=False, robustness=False, seed=seed)
        return out

    def tables9_10(self, archs: Sequence[str] = ARCHITECTURES, robustness_for: Sequence[str] = ()) -> dict:
        pgan = self._pgan_dir()
        train_set = "pgan" if pgan is not None else "pta"
        return {arch: self._classifier(f"tables9_10/{arch}", self.out / "tables9_10" / arch, arch, train_set, pgan,
                                       cv=True, robustness=arch in robustness_for)
                for arch in archs}

    def run(self, experiments: Sequence[str] = EXPERIMENTS, archs: Sequence[str] = ARCHITECTURES,
            classes: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> dict:
        unknown = set(experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"unknown experiments {sorted(unknown)}; known: {', '.join(EXPERIMENTS)}")
        bad_archs = set(archs) - set(ARCHITECTURES)
        if bad_archs:
            raise ValueError(f"unknown architectures {sorted(bad_archs)}; known: {', '.join(ARCHITECTURES)}")
        check_profile(self.profile, experiments, archs)
        if not check_built_with(self.patch_dir, self.profile):
            log.warning("%s has no profile.json: cannot check that it was built with profile %r",
                        self.patch_dir, self.profile.name)
        start = time.perf_counter()
        if "table6" in experiments:
            self.table6(classes)
        if "table8" in experiments:
            self.table8(seeds)
        if "tables9_10" in experiments or "fig13" in experiments:
            chosen = list(archs) if "tables9_10" in experiments else ["inception_cnn"]
            self.tables9_10(chosen, robustness_for=["inception_cnn"] if "fig13" in experiments else [])
        self.results["last_run_seconds"] = time.perf_counter() - start
        atomic_write_text(self.results_path, json.dumps(self.results, indent=1) + "\n")
        return self.results


# The paper's figures, as data (smh_ml/paper_tables.json)
PAPER = json.loads((Path(__file__).with_name("paper_tables.json")).read_text())
TRAIN_SET_NAMES: dict[str, str] = PAPER["train_set_names"]
PAPER_TABLE8: dict[str, float] = PAPER["table8_test_accuracy"]
PAPER_TABLE9_CV: dict[str, float] = PAPER["table9_cv_accuracy"]
PAPER_TABLE10: dict[str, list[float]] = PAPER["table10_test_accuracy_and_parameters"]


def any_refused(gans: Path) -> bool:
    """Whether the quality gate refused any class's SDG-GAN patches under ``gans``."""
    return any(json.loads(p.read_text())["refused"] for p in gans.glob("*/synthetic/gate.json"))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _wall(entry: dict) -> str:
    seconds = entry.get("wall_seconds")
    return "reused" if seconds is None else f"{seconds:.0f}"


def _table6_lines(steps: dict) -> list[str]:
    gans = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("table6/")}
    if not gans:
        return []
    extractors = sorted({k[: -len("_fid")] for v in gans.values() for k in v["metrics"]
                         if k.endswith("_fid") and "_vs_real" not in k})
    lines = ["### Table 6: SDG-GAN vs DCGAN, FID / KID per class and feature extractor", "",
             "FID of the GAN's samples to the class's real patches, with the two yardsticks in brackets "
             "(real half vs real half / traditionally augmented vs real). The gate's ceiling is on the "
             "domain extractor's FID (the first one).", "",
             "| class | GAN | " + " | ".join(f"{e} FID (real / augmented) | {e} KID" for e in extractors)
             + " | steps (best) | train s | gate |",
             "|---|---|" + "---|---|" * len(extractors) + "---|---|---|"]
    for key in sorted(gans, key=lambda k: (k.split("/")[1], k.split("/")[0] != "sdg")):
        kind, label = key.split("/")
        m, p = gans[key]["metrics"], gans[key]["params"]

        def fmt(name: str, m: dict = m) -> str:
            return f"{m[name]:.1f}" if name in m else "-"
        cells = [f"{fmt(e + '_fid')} ({fmt(e + '_real_vs_real_fid')} / {fmt(e + '_augmented_vs_real_fid')}) "
                 f"| {m[e + '_kid_mean']:.3g}" if e + "_kid_mean" in m else "- | -" for e in extractors]
        gate = ("refused" if p.get("refused") else "passed") if "refused" in p else "-"
        if "gate_fid_ceiling" in m:
            gate += f" (ceiling {m['gate_fid_ceiling']:.1f})"
        lines.append(f"| {label} | {'SDG-GAN' if kind == 'sdg' else 'DCGAN'} | " + " | ".join(cells)
                     + f" | {p.get('steps', '-')} ({p.get('best_step', '-')}) | {fmt('train_seconds')} | {gate} |")
    lines += ["", "MLflow runs: " + ", ".join(f"{k} `{v.get('run_id')}`" for k, v in sorted(gans.items())), ""]
    return lines


def _mean_std(values: list[float]) -> str:
    """Percent mean +- sample standard deviation (0 for one value)."""
    import numpy as np

    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{100 * float(np.mean(values)):.2f} ± {100 * std:.2f}"


def _table8_lines(steps: dict, clean_class: str) -> list[str]:
    table8 = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("table8/")}
    if not table8:
        return []
    lines = ["### Table 8: baseline CNN by training set, held-out captures", "",
             "| training set | ours: accuracy % (threshold / arg-max) | paper % | per-class F1 (ours) | wall s "
             "| MLflow run |", "|---|---|---|---|---|---|"]
    reports = {name: json.loads((Path(entry["folder"]) / "report.json").read_text())
               for name, entry in table8.items()}
    for name in [n for n in TRAIN_SET_NAMES if n in table8]:
        report = reports[name]
        f1 = ", ".join(f"{c} {m['f1']:.2f}" for c, m in report["test"]["per_class"].items())
        argmax = report["test"].get("argmax", {}).get("accuracy")
        paper = PAPER_TABLE8.get(name)
        lines.append(f"| {TRAIN_SET_NAMES[name]} | {_pct(report['test']['accuracy'])} / {_pct(argmax)} "
                     f"| {'-' if paper is None else f'{paper:.2f}'} | {f1} | {_wall(table8[name])} "
                     f"| `{table8[name].get('run_id')}` |")
    if "pgan" in table8 and "pgan_ungated" not in table8:
        lines.append(f"| {TRAIN_SET_NAMES['pgan_ungated']} | not trained: the gate refused no class, so it "
                     "is the P-GAN set | | | | |")
    lines.append("")
    by_set: dict[str, list[dict]] = {}
    for name, report in reports.items():
        by_set.setdefault(name.split("/")[0], []).append(report)
    if any(len(v) > 1 for v in by_set.values()):
        defects = [c for c in next(iter(reports.values()))["classes"] if c != clean_class]
        lines += ["#### Table 8 over seeds (classifier seeds; the same training sets)", "",
                  "Mean ± sample standard deviation over the seeds; recall per defect class on the "
                  "held-out captures. Validation: image accuracy of the kept checkpoint on the validation "
                  "captures (a split of the TRAINING captures), what a choice between the sets could use.", "",
                  "| training set | seeds | validation % | accuracy % (threshold) | accuracy % (arg-max) | "
                  + " | ".join(f"{c} recall %" for c in defects) + " | clean recall % |",
                  "|---|---|---|---|---|" + "---|" * (len(defects) + 1)]
        for name in [n for n in TRAIN_SET_NAMES if n in by_set and n != "ota"]:
            runs = by_set[name]
            recall = [_mean_std([r["test"]["per_class"][c]["recall"] for r in runs])
                      for c in [*defects, clean_class]]
            argmax = [r["test"]["argmax"]["accuracy"] for r in runs if "argmax" in r["test"]]
            accuracy = _mean_std([r["test"]["accuracy"] for r in runs])
            validation = [v for v in map(validation_accuracy, runs) if v is not None]
            lines.append(f"| {TRAIN_SET_NAMES[name]} | {len(runs)} | {_mean_std(validation) if validation else '-'} "
                         f"| {accuracy} "
                         f"| {_mean_std(argmax) if argmax else '-'} | " + " | ".join(recall) + " |")
        lines.append("")
    return lines


def _baseline_lines(steps: dict) -> list[str]:
    """The score of always answering the majority class on the held-out captures, from the
    first classifier report (every step tests on the same captures)."""
    for entry in steps.values():
        path = Path(entry["folder"]) / "report.json"
        test = json.loads(path.read_text()).get("test") if path.is_file() else None
        if test and test.get("per_class"):
            support = {c: m["support"] for c, m in test["per_class"].items()}
            top, total = max(support, key=support.get), sum(support.values())
            return [f"Majority-class baseline on the held-out captures: **{100 * support[top] / total:.2f}%** "
                    f"(always `{top}`: {support[top]} of {total}). Read every accuracy below against it.", ""]
    return []


def _trial_lines(trial: dict | None) -> list[str]:
    """The validation trial's verdict: which classes the FID ceiling alone refused, and whether
    their patches made Table 8's classifier better on the validation captures."""
    if not trial:
        return []
    return ["### The validation trial of the synthetic sets", "",
            f"On trial: {', '.join(trial['classes'])} (refused by the FID ceiling alone; their patches passed "
            f"the content checks). Judged by `{trial['arch']}` at the profile's seed, trained without and with "
            f"their patches: validation accuracy {_pct(trial['without']['accuracy'])}% -> "
            f"{_pct(trial['with_synthetic']['accuracy'])}%. Verdict: {trial['reason']}. The P-GAN rows below "
            + ("hold these patches." if trial["admitted"] else "do not hold them (traditional augmentation instead)."),
            ""]


def render_report(out: Path | str) -> str:
    """Markdown tables of a reproduction folder (``results.json`` and the step reports),
    ours beside the paper's, with wall times and MLflow run ids."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    steps = results["steps"]
    lines = [f"Profile `{results['profile']['name']}`: {results['profile']['description']}", ""]
    lines += _baseline_lines(steps) + _table6_lines(steps) + _trial_lines(results.get("trial"))
    lines += _table8_lines(steps, results["profile"]["clean_class"])
    archs = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("tables9_10/")}
    if archs:
        lines += ["### Tables 9-10: k-fold CV and held-out test by architecture", "",
                  "| architecture | parameters (M) | ours: CV % (all / real only) | paper CV % | ours: test % "
                  "| paper test % (params M) | wall s | MLflow run |", "|---|---|---|---|---|---|---|---|"]
        for arch, entry in archs.items():
            m = entry["metrics"]
            cv = f"{_pct(m.get('cv_all_mean'))} ± {_pct(m.get('cv_all_std'))} / {_pct(m.get('cv_real_only_mean'))}"
            paper_cv, paper = PAPER_TABLE9_CV.get(arch), PAPER_TABLE10.get(arch)  # not in the paper: "-"
            lines.append(f"| {arch} | {m.get('parameters', 0) / 1e6:.2f} | {cv} "
                         f"| {'-' if paper_cv is None else f'{paper_cv:.2f}'} | {_pct(m['test_accuracy'])} "
                         f"| {'-' if paper is None else f'{paper[0]:.2f} ({paper[1]:.2f})'} | {_wall(entry)} "
                         f"| `{entry.get('run_id')}` |")
        lines.append("")
        inception = archs.get("inception_cnn")
        report = json.loads((Path(inception["folder"]) / "report.json").read_text()) if inception else {}
        if report.get("robustness"):
            lines += ["### Fig. 13: Inception-CNN accuracy under perturbation (held-out captures)", "",
                      "| perturbation | severity | accuracy % |", "|---|---|---|"]
            lines += [f"| {r['perturbation']} | {r['severity']:g} | {_pct(r['accuracy'])} |"
                      for r in report["robustness"]]
            lines.append("")
    return "\n".join(lines)
