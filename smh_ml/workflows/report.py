"""The Markdown report of a reproduction (``REPORT.md``): our figures beside the paper's
(``paper_tables.json``, as data), from the step folders :mod:`smh_ml.workflows.reproduce`
wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from smh_ml.workflows.trial import validation_accuracy

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
    """The validation trial's verdict: which classes were on trial (and which of them the FID
    ceiling refused), and whether their patches made Table 8's classifier better or worse on the
    validation captures."""
    if not trial:
        return []
    refused = ", ".join(trial.get("fid_refused", trial["classes"])) or "none"
    return ["### The validation trial of the synthetic sets", "",
            f"On trial: {', '.join(trial['classes'])} (their patches passed the content checks; refused by the "
            f"FID ceiling: {refused}). Judged by `{trial['arch']}` at the profile's seed, trained without and with "
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
