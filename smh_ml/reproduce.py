"""The paper's experiments on one patch set, step by step and resumable (issue 6).

    table6      SDG-GAN vs DCGAN per defect class: domain (and, with local weights,
                Inception) FID / KID, wall time
    table8      baseline CNN on O-TA (whole images), P-TA and P-GAN: held-out accuracy and
                per-class precision / recall / F1
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
from smh_ml.profiles import Profile, with_overrides
from smh_ml.step_cache import current, stamp, stamped

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
                 inception_weights: Path | str | None = None):
        self.patch_dir, self.out, self.profile = Path(patch_dir), Path(out), profile
        self.track, self.inception_weights = track, inception_weights
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
        inputs = {"train": dataclasses.asdict(self.profile.train), "epochs": self.profile.gan.domain_epochs,
                  "patch_set": self.patch_set_id, "pta": training_set_id(self.patch_dir, "pta")}
        if current(folder, inputs) is None:
            t0 = time.perf_counter()
            report = train_domain_extractor(self.patch_dir, folder, self.profile, self.profile.gan.domain_epochs)
            stamp(folder, inputs)
            self._record("domain_extractor", {"arch": report["arch"], "epochs": self.profile.gan.domain_epochs},
                         {"final_train_accuracy": report["history"][-1]["train_accuracy"]}, folder,
                         time.perf_counter() - t0)
        return folder

    def table6(self, classes: Sequence[str] | None = None) -> list[dict]:
        from smh_ml.experiments import load_classifier
        from smh_ml.fid import extractor_for
        from smh_ml.gan.experiment import run_class_gan
        from smh_ml.synthetic import class_patches, defect_classes

        domain = self.domain_extractor()
        extractors = {"domain": extractor_for("domain", load_classifier(domain)[0])}
        extractor_ids = {"domain": files_digest([domain / "model.pt"])}
        if self.inception_weights:
            extractors["inception"] = extractor_for("inception", inception_weights=self.inception_weights)
            extractor_ids["inception"] = files_digest([self.inception_weights])
        rows = []
        for kind in GAN_KINDS:
            for label in classes or defect_classes(self.patch_set, self.profile.clean_class):
                folder = self.out / "gans" / kind / label
                inputs = {"gan": dataclasses.asdict(self.profile.gan), "kind": kind, "class": label,
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
                metrics["train_seconds"] = scores["train_seconds"]
                self._record(f"table6/{kind}/{label}", {"gan": kind, "class": label, "steps": scores["steps"],
                                                        "real_patches": scores["real_patches"]},
                             metrics, folder, seconds)
                rows.append({"gan": kind, "class": label, **metrics, "real_patches": scores["real_patches"],
                             "wall_seconds": self.results["steps"][f"table6/{kind}/{label}"].get("wall_seconds")})
        return rows

    def _pgan_dir(self) -> Path | None:
        """P-GAN from the SDG-GAN synthetic sets (Table 6's GANs), when they exist."""
        from smh_ml.synthetic import write_pgan

        gans = self.out / "gans" / "sdg"
        synthetic = sorted(gans.glob("*/synthetic"))
        if not synthetic:
            return None
        folder = self.out / "pgan"
        inputs = {"patch_set": self.patch_set_id, "clean_class": self.profile.clean_class,
                  "augment": dataclasses.asdict(self.profile.augment), "pgan_target": self.profile.gan.pgan_target,
                  "synthetic": files_digest(f for s in synthetic for f in s.iterdir() if f.is_file())}
        if not (folder / "arrays.npy").is_file() or not stamped(folder, inputs):
            write_pgan(self.patch_dir, gans, self.out, self.profile)
            stamp(folder, inputs)
        return self.out

    def _classifier(self, step: str, folder: Path, arch: str, train_set: str, train_dir: Path | None,
                    cv: bool, robustness: bool) -> dict:
        from smh_ml.classifier_experiment import run_classifier

        inputs = {"train": {**dataclasses.asdict(self.profile.train), "arch": arch, "train_set": train_set},
                  "patch_set": self.patch_set_id, train_set: training_set_id(train_dir or self.patch_dir, train_set)}
        report, seconds = current(folder, inputs), None
        if report is None or (cv and not report.get("cv")) or (robustness and not report.get("robustness")):
            profile = with_overrides(self.profile, {"train.arch": arch, "train.train_set": train_set})
            t0 = time.perf_counter()
            report = run_classifier(self.patch_dir, folder, profile, cv=cv, robustness=robustness,
                                    train_dir=train_dir).to_dict()
            seconds = time.perf_counter() - t0
            stamp(folder, inputs)
        self._record(step, {"arch": arch, "train_set": train_set, "cv": cv,
                            "epochs": self.profile.train.epochs, "folds": self.profile.train.cv_folds},
                     _metric_summary(report), folder, seconds)
        return report

    def table8(self) -> dict[str, dict]:
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
        out["pta"] = self._classifier("table8/pta", self.out / "table8" / "pta", "baseline_cnn", "pta", None,
                                      cv=False, robustness=False)
        pgan = self._pgan_dir()
        if pgan is not None:
            out["pgan"] = self._classifier("table8/pgan", self.out / "table8" / "pgan", "baseline_cnn", "pgan",
                                           pgan, cv=False, robustness=False)
        else:
            log.warning("table8: no SDG-GAN synthetic sets under %s; P-GAN row skipped (run table6)", self.out)
        return out

    def tables9_10(self, archs: Sequence[str] = ARCHITECTURES, robustness_for: Sequence[str] = ()) -> dict:
        pgan = self._pgan_dir()
        train_set = "pgan" if pgan is not None else "pta"
        return {arch: self._classifier(f"tables9_10/{arch}", self.out / "tables9_10" / arch, arch, train_set, pgan,
                                       cv=True, robustness=arch in robustness_for)
                for arch in archs}

    def run(self, experiments: Sequence[str] = EXPERIMENTS, archs: Sequence[str] = ARCHITECTURES,
            classes: Sequence[str] | None = None) -> dict:
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
            self.table8()
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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _wall(entry: dict) -> str:
    seconds = entry.get("wall_seconds")
    return "reused" if seconds is None else f"{seconds:.0f}"


def render_report(out: Path | str) -> str:
    """Markdown tables of a reproduction folder (``results.json`` and the step reports),
    ours beside the paper's, with wall times and MLflow run ids."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    steps = results["steps"]
    lines = [f"Profile `{results['profile']['name']}`: {results['profile']['description']}", ""]
    gans = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("table6/")}
    if gans:
        labels = sorted({k.split("/")[1] for k in gans})
        lines += ["### Table 6: SDG-GAN vs DCGAN, domain FID / KID per class", "",
                  "| class | SDG-GAN FID | DCGAN FID | SDG-GAN KID | DCGAN KID | SDG-GAN train s | DCGAN train s |",
                  "|---|---|---|---|---|---|---|"]
        for label in labels:
            s, d = gans.get(f"sdg/{label}", {}).get("metrics", {}), gans.get(f"dcgan/{label}", {}).get("metrics", {})

            def fmt(m: dict, key: str) -> str:
                return f"{m[key]:.1f}" if key in m else "-"
            lines.append(f"| {label} | {fmt(s, 'domain_fid')} | {fmt(d, 'domain_fid')} | {fmt(s, 'domain_kid_mean')} "
                         f"| {fmt(d, 'domain_kid_mean')} | {fmt(s, 'train_seconds')} | {fmt(d, 'train_seconds')} |")
        lines += ["", "MLflow runs: " + ", ".join(f"{k} `{v.get('run_id')}`" for k, v in sorted(gans.items())), ""]
    table8 = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("table8/")}
    if table8:
        lines += ["### Table 8: baseline CNN by training set, held-out captures", "",
                  "| training set | ours: accuracy % | paper % | per-class F1 (ours) | wall s | MLflow run |",
                  "|---|---|---|---|---|---|"]
        for name in TRAIN_SET_NAMES:
            if name not in table8:
                continue
            report = json.loads((Path(table8[name]["folder"]) / "report.json").read_text())
            f1 = ", ".join(f"{c} {m['f1']:.2f}" for c, m in report["test"]["per_class"].items())
            lines.append(f"| {TRAIN_SET_NAMES[name]} "
                         f"| {_pct(report['test']['accuracy'])} | {PAPER_TABLE8[name]:.2f} | {f1} "
                         f"| {_wall(table8[name])} | `{table8[name].get('run_id')}` |")
        lines.append("")
    archs = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("tables9_10/")}
    if archs:
        lines += ["### Tables 9-10: k-fold CV and held-out test by architecture", "",
                  "| architecture | parameters (M) | ours: CV % (all / real only) | paper CV % | ours: test % "
                  "| paper test % (params M) | wall s | MLflow run |", "|---|---|---|---|---|---|---|---|"]
        for arch, entry in archs.items():
            m = entry["metrics"]
            cv = f"{_pct(m.get('cv_all_mean'))} ± {_pct(m.get('cv_all_std'))} / {_pct(m.get('cv_real_only_mean'))}"
            paper_test, paper_params = PAPER_TABLE10[arch]
            lines.append(f"| {arch} | {m.get('parameters', 0) / 1e6:.2f} | {cv} | {PAPER_TABLE9_CV[arch]:.2f} "
                         f"| {_pct(m['test_accuracy'])} | {paper_test:.2f} ({paper_params:.2f}) | {_wall(entry)} "
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
