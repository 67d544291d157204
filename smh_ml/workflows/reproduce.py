"""The paper's experiments on one patch set, step by step and resumable.

    table6      SDG-GAN vs DCGAN per defect class: domain and ImageNet (EfficientNet-Lite0;
                with local weights, also Inception) FID / KID beside the real-vs-real and
                augmented-vs-real yardsticks, the gate's verdict, wall time
    table8      baseline CNN on O-TA (whole images), P-TA, copy-paste of real defect crops (when
                the GANs learn defects), P-GAN and P-GAN without the gate:
                held-out accuracy and per-class precision / recall / F1, over one or more
                classifier seeds (mean +- std)
    tables9_10  k-fold CV and held-out accuracy, parameter count, for each architecture
    fig13       Inception-CNN accuracy under blur, noise, light and scratches

Every step writes its own folder under ``out`` atomically, then an ``inputs.json``
(:mod:`smh_ml.workflows.step_cache`) that records what it was computed from: its settings
and the content ids of its data (patch folder, training set, synthetic sets, domain
extractor). A step whose folder is complete and whose inputs are unchanged is not run
again, so a stopped run resumes; a changed profile, patch folder or upstream step re-runs it
and everything downstream of it.
``track(step, params, metrics, folder)`` is called once per finished step and returns a run
id (the CLI logs to MLflow); ids are kept in ``results.json`` so a resumed run does not log
a step twice, and a re-run step is logged anew. The classifiers are
:func:`smh_ml.workflows.classifier.run_classifier`, as ``smh-ml train`` runs them; the
report beside the paper's numbers is :mod:`smh_ml.workflows.report`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from smh_ml.config.schema import Profile
from smh_ml.data.datasets import check_built_with, load_patch_set, patch_set_id, training_set_id
from smh_ml.io import atomic_write_text, files_digest
from smh_ml.models import check_input, list_models
from smh_ml.workflows.gans import class_gan, gan_extractors
from smh_ml.workflows.step_cache import run_step, stamp, stamped
from smh_ml.workflows.trial import TRIAL_SET, fid_refused, judge, on_trial, sample_ungated

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
                  archs: Sequence[str] | None = None) -> None:
    """Check every network the chosen experiments will train against its card's size rules,
    before any of them runs, so a profile whose sizes a network cannot take fails in seconds,
    not after the GANs (no network is built)."""
    try:
        if "table8" in experiments:
            check_input("baseline_cnn", profile.augment.ota_size[1])  # the O-TA width sets its pooling
        for arch in ((archs or list_models()) if "tables9_10" in experiments else ["inception_cnn"]):
            check_input(arch, profile.patching.patch)
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
        from smh_ml.training.baselines import train_domain_extractor

        folder = self.out / "domain"
        steps = self.profile.gan.domain_steps
        inputs = {"train": dataclasses.asdict(self.profile.train), "epochs": self.profile.gan.domain_epochs,
                  **({"steps": steps} if steps else {}),  # an epoch-sized extractor keeps its earlier stamp
                  "patch_set": self.patch_set_id, "pta": training_set_id(self.patch_dir, "pta")}
        ran = run_step(folder, inputs, lambda: train_domain_extractor(self.patch_dir, folder, self.profile))
        if not ran.reused:
            report = ran.result
            self._record("domain_extractor", {"arch": report["arch"], "steps": report["steps"]},
                         {"final_train_accuracy": report["history"][-1]["train_accuracy"]}, folder, ran.seconds)
        return folder

    def table6(self, classes: Sequence[str] | None = None) -> list[dict]:
        from smh_ml.synthetic.gan.experiment import relative_fid_ceiling
        from smh_ml.synthetic.pgan import defect_classes

        extractors, extractor_ids = gan_extractors(self.domain_extractor(), self.imagenet, self.inception_weights)
        rows = []
        for kind in GAN_KINDS:
            for label in classes or defect_classes(self.patch_set, self.profile.clean_class):
                ran = class_gan(self.patch_set, self.patch_set_id, label, kind, self.out / "gans" / kind,
                                 self.profile, extractors, extractor_ids)
                scores = ran.result
                metrics = {f"{s['extractor']}_{m}": s[m] for s in scores["scores"] for m in ("fid", "kid_mean")}
                for yardstick in ("real_vs_real", "augmented_vs_real"):
                    metrics |= {f"{s['extractor']}_{yardstick}_fid": s["fid"] for s in scores.get(yardstick, [])}
                ceiling = relative_fid_ceiling(self.profile.gan, scores)
                if ceiling is not None:
                    metrics["gate_fid_ceiling"] = ceiling
                metrics |= {"train_seconds": scores["train_seconds"], "synthetic": scores["synthetic"]}
                self._record(f"table6/{kind}/{label}", {"gan": kind, "class": label, "steps": scores["steps"],
                                                        "best_step": scores.get("best_step"),
                                                        "real_patches": scores["real_patches"],
                                                        "refused": scores["refused"],
                                                        "gate": "; ".join(scores["gate"]["reasons"])},
                             metrics, self.out / "gans" / kind / label, ran.seconds)
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

    def _write_pgan(self, root: Path, folders: dict[str, str | None]) -> Path:
        """``root/pgan`` from each class's ``<class>/<folders[class]>`` synthetic set (sampled
        ungated from the saved generator when it is :data:`TRIAL_SET`; none when None)."""
        from smh_ml.synthetic.pgan import build_pgan, read_synthetic, save_training_set

        gans = self.out / "gans" / "sdg"
        for label in [label for label, name in folders.items() if name == TRIAL_SET]:
            sample_ungated(self.patch_set, gans, label, self.profile)
        synthetic = [gans / label / name for label, name in sorted(folders.items()) if name]
        folder = root / "pgan"
        inputs = {"patch_set": self.patch_set_id, "clean_class": self.profile.clean_class,
                  "augment": dataclasses.asdict(self.profile.augment), "pgan_target": self.profile.gan.pgan_target,
                  "synthetic": files_digest(f for s in synthetic for f in sorted(s.iterdir()) if f.is_file()),
                  "without": sorted(label for label, name in folders.items() if not name)}
        if not (folder / "arrays.npy").is_file() or not stamped(folder, inputs):
            sets = {label: read_synthetic(gans / label / name) for label, name in folders.items() if name}
            save_training_set(folder, build_pgan(self.patch_set, sets, self.profile.clean_class,
                                                      self.profile.augment, self.profile.gan.pgan_target))
            stamp(folder, inputs)
        return root

    def _copy_paste_dir(self) -> Path | None:
        """``copy_paste/pgan``: P-GAN's recipe with each defect class topped up by real defect
        crops pasted onto clean TRAIN patches (:mod:`smh_ml.synthetic.copy_paste`) instead of
        generated ones: the training-free baseline beside P-GAN. None unless the GANs learn
        defect crops (``gan.source = "defects"``)."""
        from smh_ml.synthetic.copy_paste import build_copy_paste
        from smh_ml.synthetic.defects import CROP_RULES
        from smh_ml.synthetic.pgan import save_training_set

        cfg = self.profile.gan
        if cfg.source != "defects":
            return None
        root = self.out / "copy_paste"
        inputs = {"patch_set": self.patch_set_id, "clean_class": self.profile.clean_class,
                  "augment": dataclasses.asdict(self.profile.augment), "gan": dataclasses.asdict(cfg),
                  "defect_crops": CROP_RULES}
        if not (root / "pgan" / "arrays.npy").is_file() or not stamped(root / "pgan", inputs):
            save_training_set(root / "pgan", build_copy_paste(self.patch_set, self.profile, root))
            stamp(root / "pgan", inputs)
        return root

    def _trial(self, gated: Path, labels: list[str]) -> Path:
        """The validation trial (:mod:`smh_ml.workflows.trial`) of every class with synthetic
        patches that passed the content checks, judged by Table 8's classifier at the profile's
        seed: returns ``gated`` when no class is on trial, else the P-GAN with their patches
        (``trial/pgan``) when the trial admits them, ``gated`` when only the sets the gate admitted
        stay (``TrialResult.kept``), and the one without any of them (``trial/none/pgan``) when
        none does. The verdict is in ``trial/trial.json`` and REPORT.md."""
        classes = on_trial(self.out / "gans" / "sdg", labels, self.profile.gan)
        self.results.pop("trial", None)
        if not classes:
            self.results["steps"].pop("trial", None)
            return gated
        refused = fid_refused(self.out / "gans" / "sdg", classes)
        candidate = self._write_pgan(self.out / "trial", {label: TRIAL_SET if label in refused else "synthetic"
                                                          for label in labels})
        without = self._write_pgan(self.out / "trial" / "none", {label: None if label in classes else "synthetic"
                                                                 for label in labels})
        fits = [self._fit_only(self.out / "trial" / name, root) for name, root in
                (("without", without), ("with", candidate))]
        result = judge(classes, *[report for report, _ in fits], self.profile.gan.trial_min_gain, refused)
        fresh = any(trained for _, trained in fits)
        self.results["trial"] = result.to_dict()
        result.save(self.out / "trial" / "trial.json")
        self._record("trial", {"classes": ",".join(classes), "arch": result.arch, "min_gain": result.min_gain,
                               "admitted": result.admitted},
                     {"val_accuracy_without": result.without["accuracy"],
                      "val_accuracy_with": result.with_synthetic["accuracy"]}, self.out / "trial",
                     result.seconds if fresh else None)
        log.info("trial: %s", result.reason)
        return candidate if result.admitted else (gated if result.kept else without)

    def _fit_only(self, folder: Path, train_dir: Path) -> tuple[dict, bool]:
        """Table 8's classifier fitted on ``train_dir``'s P-GAN, validation only (a trial never
        looks at the test captures): its report, and whether it was trained now (not reused)."""
        from smh_ml.data.datasets import load_training_set
        from smh_ml.training.loop import class_names
        from smh_ml.workflows.classifier import ClassifierReport, fit_stage, save_fit

        train = dataclasses.replace(self.profile.train, arch="baseline_cnn", train_set="pgan")
        inputs = {"train": dataclasses.asdict(train), "patch_set": self.patch_set_id,
                  "pgan": training_set_id(train_dir, "pgan")}

        def fit() -> None:
            names = class_names(set(self.patch_set.captures["label"]), self.profile.clean_class)
            model, report = fit_stage(self.patch_set, load_training_set(train_dir, "pgan"), names,
                                      dataclasses.replace(self.profile, train=train), train, cv=False)
            save_fit(folder, model, report)

        ran = run_step(folder, inputs, fit)
        return ClassifierReport.load(folder).to_dict(), not ran.reused

    def _classifier(self, step: str, folder: Path, arch: str, train_set: str, train_dir: Path | None,
                    cv: bool, robustness: bool, seed: int | None = None) -> dict:
        from smh_ml.workflows.classifier import run_classifier

        seed = self.profile.train.seed if seed is None else seed
        # the step names its architecture: a profile's candidates (auto's) are not trained beside it
        train = dataclasses.replace(self.profile.train, arch=arch, candidates=(), train_set=train_set, seed=seed)
        inputs = {"train": dataclasses.asdict(train), "patch_set": self.patch_set_id,
                  train_set: training_set_id(train_dir or self.patch_dir, train_set)}
        ran = run_step(folder, inputs,
                        lambda: run_classifier(self.patch_dir, folder, dataclasses.replace(self.profile, train=train),
                                               cv=cv, robustness=robustness, train_dir=train_dir,
                                               precision_gate=False),
                        rerun_if=lambda r: (cv and not r.get("cv")) or (robustness and not r.get("robustness")))
        report, seconds = ran.result, ran.seconds
        self._record(step, {"arch": arch, "train_set": train_set, "cv": cv, "seed": seed, "steps": train.steps,
                            "epochs": train.epochs, "folds": train.cv_folds, "train_dir": str(train_dir or "")},
                     _metric_summary(report), folder, seconds)
        return report

    def table8(self, seeds: Sequence[int] | None = None) -> dict[str, dict]:
        """O-TA, P-TA, P-GAN and P-GAN without the gate, each patch set trained once per seed
        (the profile's seed first; the O-TA row with it only). Step names carry ``/seed<N>``
        for the other seeds."""
        from smh_ml.training.baselines import run_whole_image_classifier

        out: dict[str, dict] = {}
        folder = self.out / "table8" / "ota"
        inputs = {"train": dataclasses.asdict(self.profile.train), "patch_set": self.patch_set_id,
                  "ota": training_set_id(self.patch_dir, "ota")}
        ran = run_step(folder, inputs, lambda: run_whole_image_classifier(self.patch_dir, folder, self.profile))
        report = ran.result
        self._record("table8/ota", {"arch": "baseline_cnn", "train_set": "ota"}, _metric_summary(report), folder,
                     ran.seconds)
        out["ota"] = report
        pgan = self._pgan_dir()
        if pgan is None:
            log.warning("table8: no SDG-GAN synthetic sets under %s; P-GAN rows skipped (run table6)", self.out)
        # with every class through the gate, P-GAN without it is the same set: not trained twice
        ungated = self._pgan_dir(ungated=True) if pgan and any_refused(self.out / "gans" / "sdg") else None
        copy_paste = self._copy_paste_dir()
        sets = [("pta", "pta", None)] + ([("copy_paste", "pgan", copy_paste)] if copy_paste else []) \
            + ([("pgan", "pgan", pgan)] if pgan else []) + ([("pgan_ungated", "pgan", ungated)] if ungated else [])
        base = self.profile.train.seed
        for seed in [base, *[s for s in seeds or () if s != base]]:
            suffix = "" if seed == base else f"/seed{seed}"
            for name, train_set, train_dir in sets:
                folder = self.out / "table8" / (name if seed == base else f"seed{seed}/{name}")
                out[f"{name}{suffix}"] = self._classifier(f"table8/{name}{suffix}", folder, "baseline_cnn", train_set,
                                                          train_dir, cv=False, robustness=False, seed=seed)
        return out

    def tables9_10(self, archs: Sequence[str] | None = None, robustness_for: Sequence[str] = ()) -> dict:
        pgan = self._pgan_dir()
        train_set = "pgan" if pgan is not None else "pta"
        return {arch: self._classifier(f"tables9_10/{arch}", self.out / "tables9_10" / arch, arch, train_set, pgan,
                                       cv=True, robustness=arch in robustness_for)
                for arch in (archs or list_models())}

    def run(self, experiments: Sequence[str] = EXPERIMENTS, archs: Sequence[str] | None = None,
            classes: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> dict:
        unknown = set(experiments) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"unknown experiments {sorted(unknown)}; known: {', '.join(EXPERIMENTS)}")
        archs = list(archs or list_models())
        bad_archs = set(archs) - set(list_models())
        if bad_archs:
            raise ValueError(f"unknown architectures {sorted(bad_archs)}; known: {', '.join(list_models())}")
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




def any_refused(gans: Path) -> bool:
    """Whether the quality gate refused any class's SDG-GAN patches under ``gans`` (a class with no
    GAN, its defects filling the patch, has none to refuse)."""
    gates = [json.loads(p.read_text()) for p in gans.glob("*/synthetic/gate.json")]
    return any(g["refused"] and not g.get("skipped") for g in gates)


