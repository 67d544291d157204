"""Assets: raw captures -> capture manifest -> patch sets (P-TA, O-TA).

Thin wiring only: every computation is a call into smh_ml. Each asset writes its files
under the storage resource's root, atomically, and reports what people check in the UI.
"""


import json

import dagster as dg

from pipelines.assets.common import counts_table, picture
from pipelines.resources import CaptureDataResource, ProfileResource, StorageResource
from smh_ml.data.captures import class_counts, load_manifest, read_manifest, save_manifest
from smh_ml.data.datasets import build_datasets, save_built
from smh_ml.data.validation import validate_manifest, validate_patch_sets
from smh_ml.evaluation.plots import sample_grid

MANIFEST_CHECK = "gx_capture_manifest"
PATCH_CHECK = "gx_patch_sets"


@dg.observable_source_asset(group_name="data",
                            description="Captures under the capture root, versioned by DVC "
                                        "(data.dvc md5). A new version makes everything stale.")
def raw_captures(captures: CaptureDataResource) -> dg.DataVersion:
    return dg.DataVersion(captures.version())


@dg.asset(deps=[raw_captures], group_name="data",
          check_specs=[dg.AssetCheckSpec(MANIFEST_CHECK, asset="capture_manifest", blocking=True,
                                         description="Great Expectations suite on the captures")])
def capture_manifest(context: dg.AssetExecutionContext, profile: ProfileResource,
                     captures: CaptureDataResource, storage: StorageResource):
    """Every capture decoded once: path, label, size, mode, mask, content hash."""
    prof = profile.get()
    manifest = load_manifest(captures.path)
    path = save_manifest(manifest, storage.path(prof.name, "capture_manifest.csv"))
    report = validate_manifest(manifest, prof, captures.classes)
    context.log.info(report.format())
    yield dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "data_version": captures.version(),
        "captures": len(manifest),
        "class_counts": counts_table(class_counts(manifest)),
    })
    yield dg.AssetCheckResult(
        check_name=MANIFEST_CHECK, passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": len(report.violations),
                  "report": dg.MetadataValue.md("```\n" + report.format()[:20000] + "\n```")})


@dg.asset(deps=[capture_manifest], group_name="data",
          check_specs=[dg.AssetCheckSpec(PATCH_CHECK, asset="patch_sets", blocking=True,
                                         description="Great Expectations suite on the patch "
                                                     "index and training sets (no test leakage)")])
def patch_sets(context: dg.AssetExecutionContext, profile: ProfileResource,
               storage: StorageResource):
    """Measure the captures (``auto``: the recipe from the data), split by capture, cut patches
    (Eq. 5-7 geometry), label from masks, build P-TA/O-TA."""
    prof = profile.get()
    manifest = read_manifest(storage.path(prof.name, "capture_manifest.csv"))
    built = build_datasets(manifest, prof)
    prof, recipe, pta = built.profile, built.recipe, built.pta
    if recipe is not None:
        context.log.info("recipe from the data: " + "; ".join(recipe.reasons))
    checked = []
    for part in built.all():
        report = validate_patch_sets(part.patch_set, {"pta": part.pta, "ota": part.ota}, part.profile.clean_class)
        checked.append(report.format())
        if not report.success:  # nothing written: the previous good patch sets stay in place
            raise dg.Failure(description=report.format()[:20000],
                             metadata={"problems": len(report.violations)})
    out = storage.store(prof.name).patch_dir
    stats = save_built(out, built)
    grid = sample_grid(pta.arrays, pta.index["label"], storage.path(prof.name, "pta_samples.png"),
                       title=f"P-TA samples ({prof.name})")
    context.log.info(json.dumps(stats))
    yield dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)),
        "geometry": dg.MetadataValue.json(stats["geometry"]),
        "train_patches": counts_table(stats["patches"]["train"]),
        "test_patches": counts_table(stats["patches"]["test"]),
        "pta": counts_table(stats["pta"]),
        "ota": counts_table(stats["ota"]),
        "ambiguous_patches": stats["ambiguous_patches"],
        "samples": picture(grid, f"P-TA samples ({prof.name})"),
        **({} if recipe is None else {
            "recipe": f"{recipe.geometry}: {recipe.tiles} tile(s) of {recipe.patch} px",
            "recipe_reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in recipe.reasons)),
            "candidates": ", ".join(prof.train.architectures()),
            "close_call": "no" if built.alternate is None else
            f"also {built.alternate.profile.train.architectures()[0]} on "
            f"{built.alternate.patch_set.geometry.tiles} tile(s) of {built.alternate.patch_set.geometry.patch} px",
            "capture_stats": dg.MetadataValue.json(recipe.stats.to_dict())}),
    })
    yield dg.AssetCheckResult(check_name=PATCH_CHECK, passed=True,
                              metadata={"report": dg.MetadataValue.md("```\n" + "\n".join(checked) + "\n```")})
