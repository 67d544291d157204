"""Assets: domain feature extractor -> per-class GAN models -> per-class synthetic sets."""

import json

import dagster as dg

from pipelines.assets.common import picture, rounded, run_tags
from pipelines.assets.data import patch_sets
from pipelines.partitions import defect_classes
from pipelines.resources import (
    GAN_KIND,
    CaptureDataResource,
    MlflowResource,
    ProfileResource,
    QualityGatesResource,
    StorageResource,
)
from smh_ml.synthetic.defects import gan_data
from smh_ml.synthetic.fid import IMAGENET_NAME, DomainFeatures, ImageNetFeatures
from smh_ml.synthetic.gan.experiment import recall_floor, relative_fid_ceiling, synthesize_class, train_class_gan
from smh_ml.training.baselines import train_domain_extractor
from smh_ml.training.checkpoint import load_classifier

FID_CHECK = "fid_within_ceiling"


@dg.asset(deps=[patch_sets], group_name="gan",
          description="Patch classifier trained on real patches (P-TA); its penultimate layer is "
                      "the 'domain' feature extractor for FID/KID.")
def domain_extractor(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                     captures: CaptureDataResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    prof = profile.resolved(storage)
    out = storage.store(prof.name).domain_extractor_dir
    with mlflow.nested_run(context, "domain_extractor", run_tags(prof.name, captures.version()),
                           {"arch": prof.train.arch, "epochs": prof.gan.domain_epochs,
                            "steps": prof.gan.domain_steps}) as run_id:
        report = train_domain_extractor(storage.store(prof.name).patch_dir, out, prof)
        tracker = mlflow.tracker()
        tracker.log_history(run_id, [{"step": r["step"], "train_loss": r["loss"]} for r in report["history"]])
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(out)),
                                          "classes": report["classes"],
                                          "mlflow_run": dg.MetadataValue.url(tracker.run_link(run_id))})


@dg.asset(partitions_def=defect_classes, deps=[patch_sets, domain_extractor], group_name="gan",
          automation_condition=dg.AutomationCondition.on_missing(),
          check_specs=[dg.AssetCheckSpec(FID_CHECK, asset="gan_models", blocking=True,
                                         description="Domain FID at most gan.gate_fid_factor x the lower of "
                                                     "the real-vs-real and augmented-vs-real FIDs (WARN), "
                                                     "and below the FID ceiling if set (SMH_FID_CEILING or "
                                                     "gan.fid_ceiling; ERROR)")],
          description="One SDG-GAN (WGAN-GP) per defect class, trained on that class's real TRAIN "
                      "patches, or (gan.source = defects) on crops centred on its defects with their masks; "
                      "resumes from its checkpoint.")
def gan_models(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
               captures: CaptureDataResource, mlflow: MlflowResource, gates: QualityGatesResource):
    prof, label = profile.resolved(storage), context.partition_key
    patch_set = storage.store(prof.name).patch_set()
    data = gan_data(patch_set, label, prof)
    extractors = {"domain": DomainFeatures(load_classifier(storage.store(prof.name).domain_extractor_dir)[0]),
                  IMAGENET_NAME: ImageNetFeatures()}
    gan_dir = storage.store(prof.name).gan_dir
    params = {"class": label, "kind": GAN_KIND, **{k: v for k, v in vars(prof.gan).items()}}
    with mlflow.nested_run(context, f"gan-{label}", run_tags(prof.name, captures.version()) | {"class": label},
                           params) as run_id:
        result = train_class_gan(data, label, GAN_KIND, gan_dir, prof, extractors)
        tracker = mlflow.tracker()
        if result.get("skipped"):
            tracker.log_artifacts(run_id, gan_dir / label / "samples.png")
            yield dg.MaterializeResult(metadata={
                "path": dg.MetadataValue.path(str(gan_dir / label)), "skipped": result["skipped"],
                "real_crops": result["real_crops"], "crop_side": result["crop_side"],
                "samples": picture(gan_dir / label / "samples.png", f"defect crops of {label}"),
                "mlflow_run": dg.MetadataValue.url(tracker.run_link(run_id))})
            ceiling = gates.gan_config(prof).fid_ceiling
            yield dg.AssetCheckResult(check_name=FID_CHECK, passed=True, metadata={
                "skipped": result["skipped"], "domain_fid": "none", "relative_ceiling": "none",
                "ceiling": "none" if ceiling is None else ceiling})
            return
        tracker.log_history(run_id, result["history"], step_key="step")
        score = result["scores"][0]
        scored = result["scores"] + [s | {"extractor": f"{reference}_{s['extractor']}"}
                                     for reference in ("real_vs_real", "augmented_vs_real")
                                     for s in result[reference]]
        tracker.log_metrics(run_id, {f"{s['extractor']}_{key}": s[key] for s in scored
                                     for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "coverage")
                                     if key in s}
                            | {"steps": result["steps"], "best_step": result["best_step"]})
        for figure in ("samples.png", "curves.png"):
            tracker.log_artifacts(run_id, gan_dir / label / figure)
    floor = result["real_vs_real"][0]["fid"] if result["real_vs_real"] else None
    augmented = result["augmented_vs_real"][0]["fid"] if result["augmented_vs_real"] else None
    relative = relative_fid_ceiling(prof.gan, result)
    ceiling = gates.gan_config(prof).fid_ceiling
    over_absolute = ceiling is not None and score["fid"] > ceiling
    over_relative = relative is not None and score["fid"] > relative
    yield dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(gan_dir / label)),
        "real_patches": result["real_patches"], "source": result["source"], "real_crops": result["real_crops"],
        "crop_side": result["crop_side"], "steps": result["steps"], "best_step": result["best_step"],
        "stopped": result["stopped"], "train_seconds": round(result["train_seconds"], 1),
        "domain_fid": rounded(score["fid"]), "domain_kid": rounded(score["kid_mean"]),
        "domain_recall": "none" if score.get("recall") is None else rounded(score["recall"]),
        "recall_floor": "none" if recall_floor(prof.gan, result) is None else rounded(recall_floor(prof.gan, result)),
        "samples": picture(gan_dir / label / "samples.png", f"{GAN_KIND} samples of {label}"),
        "curves": picture(gan_dir / label / "curves.png", f"{GAN_KIND} losses and FID of {label}"),
        "mlflow_run": dg.MetadataValue.url(tracker.run_link(run_id))})
    # Over the FID ceiling (SMH_FID_CEILING, else the profile's gan.fid_ceiling) is an ERROR and
    # blocks this class's synthetic set (the synthetic gate reads the same value);
    # over gan.gate_fid_factor x the lower of the real-vs-real and augmented-vs-real FIDs (the
    # default) is a WARN: the class's set is then refused by the synthetic gate and topped up
    # by traditional augmentation instead.
    yield dg.AssetCheckResult(
        check_name=FID_CHECK, passed=not (over_absolute or over_relative),
        severity=dg.AssetCheckSeverity.ERROR if over_absolute else dg.AssetCheckSeverity.WARN,
        metadata={"domain_fid": rounded(score["fid"]), "domain_kid": rounded(score["kid_mean"]),
                  "real_vs_real_fid": "none" if floor is None else rounded(floor),
                  "augmented_vs_real_fid": "none" if augmented is None else rounded(augmented),
                  "relative_ceiling": "none" if relative is None else rounded(relative),
                  "ceiling": "none" if ceiling is None else ceiling})


@dg.asset(partitions_def=defect_classes, deps=[gan_models], group_name="gan",
          automation_condition=dg.AutomationCondition.eager(),
          description="Synthetic patches of one class, up to the profile's P-GAN target, marked "
                      "synthetic and named after their GAN: generated defects blended onto real clean "
                      "TRAIN patches under gan.source = defects.")
def synthetic_sets(context: dg.AssetExecutionContext, profile: ProfileResource,
                   storage: StorageResource, gates: QualityGatesResource) -> dg.MaterializeResult:
    prof, label = profile.resolved(storage), context.partition_key
    patch_set = storage.store(prof.name).patch_set()
    data = gan_data(patch_set, label, prof)
    gan_dir = storage.store(prof.name).gan_dir
    outcome = synthesize_class(label, gan_dir, data, gates.gan_config(prof))
    scores = json.loads((gan_dir / label / "scores.json").read_text())
    if outcome["refused"]:
        context.log.warning(f"{label}: synthetic patches refused by the quality gate: "
                            f"{'; '.join(outcome['gate']['reasons'])}; traditional augmentation instead")
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(gan_dir / label / "synthetic")),
                                          "synthetic": outcome["synthetic"], "real": len(data.patches),
                                          "gan": scores["gan"], "gate_passed": outcome["gate"]["passed"],
                                          "gate_reasons": "; ".join(outcome["gate"]["reasons"]) or "none",
                                          "flat_share": outcome["gate"]["flat_share"],
                                          "blank_share": outcome["gate"]["blank_share"],
                                          "diversity": outcome["gate"]["diversity"],
                                          "source": scores.get("source", "patches"),
                                          **({"blended": picture(gan_dir / label / "synthetic" / "blended.png",
                                                                 f"{label}: generated defects blended onto clean "
                                                                 "patches")}
                                             if (gan_dir / label / "synthetic" / "blended.png").is_file() else {})})
