"""``python -m pipelines``: materialise the whole graph on the current capture data.

Runs on the Dagster instance of ``$DAGSTER_HOME`` (so every run, check and lineage shows in
``dagster dev`` afterwards): ``prepare`` -> one ``gans`` run per defect class (``--parallel``
at a time) -> ``classifier``. Exits non-zero, naming the run, when anything fails; a failed
run leaves the previous artifacts and the registered champion as they were.
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from pipelines import definitions
from pipelines.partitions import defect_classes
from pipelines.recovery import recover


def _execute(instance: dg.DagsterInstance, factory, tags: dict | None = None) -> dg.JobExecutionResult:
    result = dg.execute_job(dg.reconstructable(factory), instance=instance, tags=tags or {})
    label = f"{factory.__name__}{' ' + tags['dagster/partition'] if tags else ''}"
    status = "ok" if result.success else "FAILED"
    print(f"[pipelines] run {result.run_id[:8]} {label}: {status}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=int(os.environ.get("SMH_GAN_PARALLEL", "1")),
                        help="GAN runs (one per defect class) at a time")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    instance = dg.DagsterInstance.get()
    resources = definitions.default_resources()
    failed = recover(instance, resources["mlflow"])
    if failed["dagster"] or failed["mlflow"]:
        print(f"[pipelines] marked failed (their process was killed): Dagster runs {failed['dagster']}, "
              f"MLflow runs {failed['mlflow']}", flush=True)
    if not _execute(instance, definitions.prepare).success:
        return 1
    from smh_ml.data.datasets import load_patch_set
    from smh_ml.synthetic.pgan import defect_classes as classes_of

    profile = resources["profile"].get()
    patch_set = load_patch_set(resources["storage"].path(profile.name, "patch_sets"))
    classes = classes_of(patch_set, profile.clean_class)
    known = set(instance.get_dynamic_partitions(defect_classes.name))
    if new := [c for c in classes if c not in known]:
        instance.add_dynamic_partitions(defect_classes.name, new)
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        results = list(pool.map(lambda c: _execute(instance, definitions.gans, {"dagster/partition": c}),
                                classes))
    if not all(r.success for r in results):
        return 1
    if not _execute(instance, definitions.classifier).success:
        return 1
    print(f"[pipelines] whole graph materialised in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
