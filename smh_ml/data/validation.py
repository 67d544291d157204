"""Data validation with Great Expectations 1.x at the asset boundaries.

Two suites: the capture manifest (files exist and decode, 8-bit grey, sizes within the
profile's ranges, known class, mask matches its image, no content under two labels, no
empty class) and the patch sets (labels, fractions, grid positions, and no test capture in
any training set). Per-file facts are computed into columns first (decoding happens once,
in :func:`smh_ml.data.captures.load_manifest`); GX then checks those columns and reports every
unexpected row, which :class:`ValidationReport` turns into (file, rule, value) lines.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402

from smh_ml.config.schema import Profile  # noqa: E402
from smh_ml.data.captures import (  # noqa: E402
    CLASS_NAME,
    GREY_RGB_MODE,
    MIN_CAPTURE_SIDE,
)
from smh_ml.data.datasets import PatchSet, TrainingSet  # noqa: E402
from smh_ml.data.inspection import inspect_capture  # noqa: E402
from smh_ml.data.recipe import is_auto  # noqa: E402


@dataclass(frozen=True)
class Violation:
    file: str
    rule: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.rule}" + (f" (got {self.value})" if self.value else "")


@dataclass
class ValidationReport:
    suite: str
    violations: list[Violation] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.violations

    def format(self) -> str:
        head = f"{self.suite}: {'passed' if self.success else f'{len(self.violations)} problem(s)'}"
        counts = ", ".join(f"{k}={v}" for k, v in self.class_counts.items())
        lines = [head, f"  class counts: {counts}"] + [f"  note: {n}" for n in self.notes]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        if not self.success:
            raise DataValidationError(self)


class DataValidationError(ValueError):
    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.format())


@functools.lru_cache(maxsize=1)
def _context():
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    return context


_counter = iter(range(1 << 30))


def _run(frame: pd.DataFrame, expectations: Iterable, id_column: str) -> list[Violation]:
    """Validate ``frame`` and list every unexpected row as a Violation keyed by ``id_column``.

    Each expectation carries ``meta={"rule": ...}``, the sentence shown to people.
    """
    if frame.empty:
        return []
    context = _context()
    n = next(_counter)
    source = context.data_sources.add_pandas(f"source_{n}")
    batch = (source.add_dataframe_asset(f"asset_{n}")
             .add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)}))
    suite = gx.ExpectationSuite(name=f"suite_{n}", expectations=list(expectations))
    result = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                  "unexpected_index_column_names": [id_column]})
    violations = []
    for item in result.results:
        if item.success:
            continue
        rule = item.expectation_config.meta.get("rule", item.expectation_config.type)
        column = item.expectation_config.kwargs.get("column")
        for bad in item.result.get("unexpected_index_list") or []:
            violations.append(Violation(str(bad[id_column]), rule, str(bad.get(column, ""))))
        if not item.result.get("unexpected_index_list"):
            violations.append(Violation("(whole set)", rule, str(item.result.get("observed_value"))))
    return violations


def _flag(column: str, rule: str):
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True], meta={"rule": rule})


def validate_manifest(manifest: pd.DataFrame, profile: Profile,
                      classes: Iterable[str] | None = None) -> ValidationReport:
    """Validate a capture manifest (from :func:`smh_ml.data.captures.load_manifest`).

    ``classes`` is the declared class set; when None every well-formed folder name is a
    class (a new defect type is a new folder, no code change), but the clean class must be
    among them.
    """
    vcfg = profile.validation
    known = set(classes) if classes is not None else None
    checks = pd.DataFrame({"path": manifest["path"], "label": manifest["label"]})
    checks["exists"] = manifest["path"].map(os.path.exists)
    checks["decodes"] = manifest["decodes"].astype(bool) | ~checks["exists"]
    checks["error"] = manifest["error"].fillna("")
    gray8 = (manifest["channels"] == 1) & (manifest["bit_depth"] == 8)
    gray8 = gray8.fillna(True).astype(bool)  # undecodable rows are reported by 'decodes'
    converted = ~gray8 & manifest["decodes"].astype(bool)
    checks["gray8"] = gray8 | (converted & vcfg.convert_color)
    checks["mode"] = manifest["mode"].fillna("")
    checks["height"], checks["width"] = manifest["height"], manifest["width"]
    has_mask = manifest["mask_path"].notna()
    mask_ok = (manifest["mask_error"].isna() & (manifest["mask_height"] == manifest["height"])
               & (manifest["mask_width"] == manifest["width"])).fillna(False)
    checks["mask_matches"] = (~has_mask | ~manifest["decodes"].astype(bool) | mask_ok).astype(bool)
    checks["mask_size"] = (manifest["mask_height"].astype(str) + "x" + manifest["mask_width"].astype(str)
                           + " vs image " + manifest["height"].astype(str) + "x"
                           + manifest["width"].astype(str) + " "
                           + manifest["mask_error"].fillna(""))
    checks["decidable"], checks["decide_problem"] = _decidable(manifest, checks["gray8"],
                                                               profile.patching.background_level)
    labels_per_hash = manifest.groupby("content_hash")["label"].transform("nunique")
    checks["labels_for_content"] = labels_per_hash.fillna(1).astype(int)
    checks["clean_mask_empty"] = ~((manifest["label"] == profile.clean_class)
                                   & (manifest["defect_fraction"].fillna(0) > 0))
    label_set = sorted(known) if known is not None else sorted(
        lab for lab in manifest["label"].unique() if CLASS_NAME.match(str(lab)))
    expectations = [
        _flag("exists", "file exists"),
        gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True],
                                        meta={"rule": "file decodes as an image"}),
        gxe.ExpectColumnValuesToBeInSet(column="gray8", value_set=[True],
                                        meta={"rule": "8-bit single-channel image (set "
                                                      "validation.convert_color to convert)"}),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=vcfg.height_range[0],
                                          max_value=vcfg.height_range[1],
                                          meta={"rule": f"height within {vcfg.height_range}"}),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=vcfg.width_range[0],
                                          max_value=vcfg.width_range[1],
                                          meta={"rule": f"width within {vcfg.width_range}"}),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=label_set,
                                        meta={"rule": "class folder is a known class "
                                                      f"({', '.join(label_set)})"}),
        _flag("mask_matches", "mask decodes and has its image's size"),
        _flag("decidable", DECIDABLE_RULE),
        gxe.ExpectColumnValuesToBeBetween(column="labels_for_content", max_value=1,
                                          meta={"rule": "identical content under two labels"}),
        _flag("clean_mask_empty", "a clean capture's mask has no defect pixels"),
    ]
    violations = _run(checks, expectations, "path")
    # Say what was wrong, not just which rule: attach the decoder's or the mask's message.
    detail = {"file decodes as an image": dict(zip(checks["path"], checks["error"])),
              "mask decodes and has its image's size": dict(zip(checks["path"], checks["mask_size"])),
              "8-bit single-channel image (set validation.convert_color to convert)":
                  dict(zip(checks["path"], "mode " + checks["mode"])),
              DECIDABLE_RULE: dict(zip(checks["path"], checks["decide_problem"]))}
    violations = [Violation(v.file, v.rule, detail[v.rule].get(v.file, v.value))
                  if v.rule in detail else v for v in violations]
    for path, problem in manifest.attrs.get("layout_problems", []):
        violations.append(Violation(path, "capture folder convention", problem))
    counts = manifest["label"].value_counts()
    notes = []
    # A set of defective captures only (common for public defect sets) has its clean class in
    # the parts of each capture outside the defect mask: allowed when every capture has a mask.
    defect_only = counts.get(profile.clean_class, 0) == 0 and len(manifest) > 0
    declared = set(label_set) | set(manifest.attrs.get("class_folders", []))
    if not defect_only:
        declared.add(profile.clean_class)
    elif manifest["mask_path"].isna().all() and (is_auto(profile) or profile.patching.tiles == 1):
        # whole captures take their folder's label: no mask needed, and none to cut clean parts from
        notes.append(f"no {profile.clean_class!r} captures and no masks: whole captures, decided among the "
                     "defect classes by arg-max")
    else:
        unmasked = manifest.loc[manifest["mask_path"].isna(), "path"]
        violations += [Violation(str(path), NO_CLEAN_RULE, "no mask") for path in unmasked]
        notes.append(f"no {profile.clean_class!r} captures: the {profile.clean_class!r} patches are the parts of "
                     "defect captures outside their masks, and the image-level test covers the defect classes only "
                     "(decided by arg-max: no clean captures to calibrate a threshold on)")
    count_frame = pd.DataFrame({"label": sorted(declared)})
    count_frame["captures"] = count_frame["label"].map(counts).fillna(0).astype(int)
    violations += _run(count_frame, [gxe.ExpectColumnValuesToBeBetween(
        column="captures", min_value=1,
        meta={"rule": "class has at least one capture (clean class included unless every capture has a mask)"})],
        "label")
    converted &= checks["decidable"]  # a refused capture is not counted as converted
    if vcfg.convert_color and converted.any():
        notes.append(f"{int(converted.sum())} capture(s) converted to 8-bit grey")
    grey_rgb = int((manifest["mode"] == GREY_RGB_MODE).sum())
    if grey_rgb:
        notes.append(f"{grey_rgb} capture(s) stored as RGB with equal channels: read as 8-bit grey")
    return ValidationReport("capture manifest", violations,
                            {str(k): int(v) for k, v in counts.sort_index().items()}, notes)


NO_CLEAN_RULE = "without clean captures, every capture needs a defect mask (its clean patches come from outside it)"
DECIDABLE_RULE = (f"a product brighter than the background, at least {MIN_CAPTURE_SIDE} px a side "
                  "(as predict requires)")


def _decidable(manifest: pd.DataFrame, readable: pd.Series, background_level: int) -> tuple[pd.Series, pd.Series]:
    """Per capture: whether the inference engine could decide it (capture_problem at
    ``background_level``) and why not. Files that do not decode are other rules' business.
    The recipe and patching that follow read the inspection back instead of decoding the
    capture again (smh_ml.data.inspection)."""
    from concurrent.futures import ThreadPoolExecutor

    todo = manifest["decodes"].astype(bool) & readable
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        found = dict(zip(manifest.index[todo], pool.map(
            lambda path: inspect_capture(path, background_level).problem or "", manifest.loc[todo, "path"])))
    problems = pd.Series([found.get(i, "") for i in manifest.index], index=manifest.index)
    return problems == "", problems


def validate_patch_sets(patch_set: PatchSet, training_sets: dict[str, TrainingSet],
                        clean_class: str) -> ValidationReport:
    """Validate the patch index and the training sets built from it."""
    index, geometry = patch_set.index, patch_set.geometry
    classes = sorted(set(patch_set.captures["label"]) | {clean_class})
    frame = index.assign(file=index["capture_id"] + "#r" + index["row"].astype(str)
                         + "c" + index["col"].astype(str))
    expectations = [
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes,
                                        meta={"rule": "patch label is a capture class"}),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test"],
                                        meta={"rule": "split is train or test"}),
        gxe.ExpectColumnValuesToBeBetween(column="defect_fraction", min_value=0, max_value=1,
                                          meta={"rule": "defect fraction within [0, 1]"}),
        gxe.ExpectColumnValuesToBeBetween(column="row", min_value=0, max_value=geometry.rows - 1,
                                          meta={"rule": f"row within the {geometry.rows}-row grid"}),
        gxe.ExpectColumnValuesToBeBetween(column="col", min_value=0, max_value=geometry.cols - 1,
                                          meta={"rule": f"col within the {geometry.cols}-col grid"}),
    ]
    violations = _run(frame, expectations, "file")
    if len(index) != len(patch_set.patches):
        violations.append(Violation("patches.npy", "one patch array row per index row",
                                    f"{len(patch_set.patches)} arrays, {len(index)} rows"))
    split_of = dict(zip(patch_set.captures["capture_id"], patch_set.captures["split"]))
    counts: dict[str, int] = {}
    for name, ts in training_sets.items():
        if len(ts.index) != len(ts.arrays):
            violations.append(Violation(f"{name}/arrays.npy", "one array row per index row",
                                        f"{len(ts.arrays)} arrays, {len(ts.index)} rows"))
        leak = ts.index.assign(split=ts.index["capture_id"].map(split_of),
                               file=name + ":" + ts.index["capture_id"])
        violations += _run(leak, [gxe.ExpectColumnValuesToBeInSet(
            column="split", value_set=["train"],
            meta={"rule": f"{name} holds only TRAIN captures (test captures never train)"})], "file")
        per_class = ts.index["label"].value_counts()
        # every capture class must be learnable; the clean class only where clean captures
        # exist (tiles of a defect-only set hold clean patches too, whole captures hold none)
        expected = sorted(set(patch_set.captures["label"]))
        count_frame = pd.DataFrame({"label": expected})
        count_frame["items"] = count_frame["label"].map(per_class).fillna(0).astype(int)
        count_frame["label"] = name + ":" + count_frame["label"]
        violations += _run(count_frame, [gxe.ExpectColumnValuesToBeBetween(
            column="items", min_value=1, meta={"rule": f"{name} has every class"})], "label")
        counts |= {f"{name}:{k}": int(v) for k, v in per_class.sort_index().items()}
    return ValidationReport("patch sets", violations, counts)
