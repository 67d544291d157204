"""Every MLflow call of the project, in one place.

Defaults (a sqlite store under ``mlflow/``, the experiment and registered-model names), the
runs (one parent run per pipeline run, a nested run per stage), metrics and artifacts, the
registry (register, aliases, the promotion compare-and-set), resolving ``models:/`` URIs to
an ONNX file, and the MLflow model folder a registered version holds. ``pipelines/`` holds
configuration and calls into :class:`Tracker`; the CLI does the same. MLflow is imported
lazily, so importing this module costs nothing and needs neither MLflow nor torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from smh_ml.io import temp_dir
from smh_ml.paths import anchored, anchored_uri
from smh_ml.tracking.promotion import promotion_decision

DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlflow/artifacts"
DEFAULT_EXPERIMENT = "smh-defect-recognition"
DEFAULT_MODEL_NAME = "smh-defect-classifier"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
"""Where ``mlflow ui`` serves a local store by default: run links point there."""
PYFUNC_LOADER = "smh_ml.deploy.pyfunc"
"""The module MLflow's ``python_function`` flavour loads a registered classifier with."""


def process_tags() -> dict[str, str]:
    """Which process on which machine owns a run: a run left RUNNING by a killed process is
    told from a live one by these (:meth:`Tracker.fail_stale_runs`)."""
    return {"smh.host": socket.gethostname(), "smh.pid": str(os.getpid())}


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the sqlite store under ``mlflow/``; a
    relative sqlite path resolves against the project root, not the working folder
    (smh_ml.paths)."""
    return anchored_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def connect(uri: str | None = None):
    """An ``MlflowClient`` on ``uri`` (see :func:`tracking_uri`), telemetry off, the sqlite
    folder created; also makes ``uri`` the process's tracking URI for fluent calls."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


@dataclass(frozen=True)
class Tracker:
    """One tracking store, experiment and registered model."""

    uri: str = DEFAULT_TRACKING_URI
    artifact_root: str = DEFAULT_ARTIFACT_ROOT
    experiment: str = DEFAULT_EXPERIMENT
    model_name: str = DEFAULT_MODEL_NAME
    ui_url: str = DEFAULT_UI_URL
    """The MLflow UI of a local store (``mlflow ui --backend-store-uri <uri>``)."""

    def __post_init__(self) -> None:
        # relative stores resolve against the project root, whichever folder the run starts in
        object.__setattr__(self, "uri", tracking_uri(self.uri))

    def client(self):
        return connect(self.uri)

    def experiment_id(self) -> str:
        """The experiment's id, created on first use (artifacts under ``artifact_root`` for a
        local store; a server chooses its own)."""
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = None if _is_server(self.uri) else anchored(self.artifact_root).resolve().as_uri()
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # created meanwhile by a parallel step
            return client.get_experiment_by_name(self.experiment).experiment_id

    # --- runs -----------------------------------------------------------------------------

    def parent_run(self, group_id: str, tags: Mapping[str, str]) -> str:
        """The run standing for one pipeline run (``group_id``: the Dagster run id), created
        on first use."""
        client, exp = self.client(), self.experiment_id()
        found = client.search_runs([exp], f"tags.dagster_run_id = '{group_id}' and tags.role = 'parent'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(exp, run_name=f"dagster-{group_id[:8]}",
                                tags={"dagster_run_id": group_id, "role": "parent", **process_tags(), **tags})
        return run.info.run_id

    @contextmanager
    def nested_run(self, group_id: str, name: str, tags: Mapping[str, str],
                   params: Mapping | None = None) -> Iterator[str]:
        """A child run of ``group_id``'s parent run; FINISHED on success, FAILED on error."""
        client = self.client()
        parent = self.parent_run(group_id, tags)
        run = client.create_run(self.experiment_id(), run_name=name,
                                tags={"mlflow.parentRunId": parent, "dagster_run_id": group_id,
                                      "role": name, **process_tags(), **tags})
        run_id = run.info.run_id
        for key, value in (params or {}).items():
            client.log_param(run_id, key, str(value)[:6000])
        try:
            yield run_id
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        client.set_terminated(parent, "FINISHED")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | int | None], step: int | None = None) -> None:
        """Numeric entries of ``metrics`` (None and non-numbers skipped), in one request."""
        self.log_history(run_id, [{"step": step or 0, **metrics}])

    def log_history(self, run_id: str, records: Iterable[Mapping], step_key: str = "step") -> None:
        """Training curves: every numeric field of each record at the record's ``step_key``,
        sent in batches (MLflow takes at most 1,000 metrics per request)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(record[step_key])) for record in records
                   for key, value in record.items()
                   if key != step_key and isinstance(value, (int, float)) and not isinstance(value, bool)]
        client = self.client()
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def log_dict(self, run_id: str, data: Mapping, name: str) -> None:
        self.client().log_dict(run_id, dict(data), name)

    def log_artifacts(self, run_id: str, path: Path | str, artifact_path: str | None = None) -> None:
        """A file or a folder's files under ``artifact_path``."""
        client, path = self.client(), Path(path)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)

    def run_link(self, run_id: str) -> str:
        """The run's page in the MLflow UI: the server's own, or ``ui_url`` for a local store
        (served by ``mlflow ui --backend-store-uri <uri>``)."""
        base = self.uri if _is_server(self.uri) else self.ui_url
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id()}/runs/{run_id}"

    # --- fluent runs for the CLI ----------------------------------------------------------

    @contextmanager
    def active_run(self, name: str, tags: Mapping[str, str]) -> Iterator[Callable[[str, dict, dict, Path], str]]:
        """A top-level run for a CLI command, yielding a step logger: each call opens a nested
        run with the step's params, metrics and small files (json, png, csv)."""
        import mlflow

        self.client()
        mlflow.set_experiment(experiment_id=self.experiment_id())

        def log_step(step: str, params: dict, metrics: dict, folder: Path) -> str:
            with mlflow.start_run(run_name=step, nested=True, tags={"step": step}) as run:
                mlflow.log_params(params)
                mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
                for path in sorted(folder.glob("*")):
                    if path.is_file() and path.suffix in (".json", ".png", ".csv"):
                        mlflow.log_artifact(str(path))
                return run.info.run_id

        with mlflow.start_run(run_name=name, tags={**process_tags(), **tags}):
            yield log_step

    def fail_stale_runs(self, dagster_run_alive: Callable[[str], bool] | None = None) -> list[str]:
        """Mark FAILED the runs left RUNNING by a killed process; returns their ids.

        A run of a Dagster run (tag ``dagster_run_id``) is stale when ``dagster_run_alive``
        says that run is no longer in progress; any other run when its owner (tags
        ``smh.host``/``smh.pid``) was on this machine and is gone. Runs of other machines, and
        runs whose owner cannot be told, are left alone."""
        from smh_ml.io import pid_alive

        client, host = self.client(), socket.gethostname()
        failed = []
        for run in client.search_runs([self.experiment_id()], "attributes.status = 'RUNNING'", max_results=1000):
            tags = run.data.tags
            if "dagster_run_id" in tags:
                stale = dagster_run_alive is not None and not dagster_run_alive(tags["dagster_run_id"])
            else:
                stale = tags.get("smh.host") == host and tags.get("smh.pid", "").isdigit() \
                    and not pid_alive(int(tags["smh.pid"]))
            if stale:
                client.set_terminated(run.info.run_id, "FAILED")
                client.set_tag(run.info.run_id, "smh.failed_reason", "its process ended without finishing it")
                failed.append(run.info.run_id)
        return failed

    # --- registry -------------------------------------------------------------------------

    @contextmanager
    def promotion_lock(self) -> Iterator[None]:
        """Serialises the champion's compare-and-set: on a local sqlite store with a file lock
        beside the database (released by the kernel when its process dies), on any other store
        (an MLflow server, PostgreSQL), which other machines may share, with a mutex held in the
        registry itself (smh_ml.tracking.registry_lock)."""
        if not self.uri.startswith("sqlite:///"):
            from smh_ml.tracking.registry_lock import registry_lock

            with registry_lock(self.client(), self.model_name):
                yield
            return
        import fcntl

        lock = Path(self.uri.removeprefix("sqlite:///")).with_suffix(".promotion.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def version_accuracy(self, version: str, paths: Iterable[Path | str], labels: Iterable[str],
                         cache: Path | str) -> float:
        """A registered version's accuracy on labelled capture files, decided through the deploy
        engine as the line would (a class the version does not know counts as a miss)."""
        from smh_ml.deploy import Engine

        # fp32 on onnxruntime: both versions are judged with the same arithmetic, whatever this CPU has
        engine = Engine(resolve_model(f"models:/{self.model_name}/{version}", self.uri, cache=cache),
                        backend="onnxruntime")
        predictions = list(engine.decide_paths(paths))
        hits = sum(p.decision is not None and p.decision.label == label for p, label in zip(predictions, labels))
        return hits / max(len(predictions), 1)

    def register(self, run_id: str, model_dir: Path, accuracy: float, test_set: str, margin: float,
                 tags: Mapping[str, str], baseline: float | None = None, baseline_margin: float = 0.02,
                 contender: bool = True, test_size: int | None = None,
                 retest: Callable[[str], float] | None = None) -> dict:
        """Log ``model_dir`` (:func:`package_model`) as an MLflow 3 LoggedModel of ``run_id``, with
        the test accuracy as its metric and a description, and register it. A ``contender`` (the best candidate
        of its run) is aliased ``challenger`` and becomes ``champion`` only if it is above the
        trivial ``baseline`` + ``baseline_margin`` and strictly more accurate than the champion
        on the same test set by more than ``margin`` and the noise of ``test_size`` captures
        (smh_ml.tracking.promotion); other candidates are registered for the record only.
        A champion tested on other captures (an earlier data version) is re-tested on this
        run's test captures by ``retest`` (champion version -> accuracy) when given, so the two
        are compared on the same captures; without it such a champion is kept for review.
        The decision and the scores are stored as tags on the new version."""
        from mlflow.exceptions import MlflowException


        client = self.client()
        logged = client.create_logged_model(self.experiment_id(), name="model", source_run_id=run_id,
                                            tags={k: str(v) for k, v in tags.items()})
        client.log_model_artifacts(logged.model_id, str(model_dir))
        client.finalize_logged_model(logged.model_id, "READY")
        client.log_metric(run_id, "test_accuracy", float(accuracy), model_id=logged.model_id)
        try:
            client.create_registered_model(self.model_name)
        except MlflowException:  # it exists (the usual case)
            pass
        version = client.create_model_version(
            self.model_name, f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id,
            description=(f"{tags.get('arch', 'classifier')} ({tags.get('profile', '?')} profile): held-out image "
                         f"accuracy {accuracy:.4f} on test set {test_set}; raw capture images in (base64 'image' "
                         f"column), Algorithm 1 decisions out.")).version
        for key, value in {"test_accuracy": str(accuracy), "test_set_id": test_set, **tags}.items():
            client.set_model_version_tag(self.model_name, version, key, value)
        if not contender:
            outcome = {"promote": False, "reason": "not the best candidate of its run", "version": int(version),
                       "challenger_accuracy": accuracy, "champion_accuracy": None, "champion_version": None}
            client.set_model_version_tag(self.model_name, version, "promotion", json.dumps(outcome))
            return outcome
        with self.promotion_lock():  # read the champion, decide and move the alias as one step
            client.set_registered_model_alias(self.model_name, "challenger", version)
            try:
                champion = client.get_model_version_by_alias(self.model_name, "champion")
            except MlflowException:
                champion = None
            champion_accuracy = float(champion.tags["test_accuracy"]) if champion else None
            same_set = champion is None or champion.tags.get("test_set_id") == test_set
            retested = not same_set and retest is not None
            if retested:
                champion_accuracy, same_set = float(retest(champion.version)), True
            outcome = promotion_decision(accuracy, champion_accuracy, margin, same_set, baseline, baseline_margin,
                                         test_size)
            outcome |= {"version": int(version), "champion_version": int(champion.version) if champion else None,
                        "champion_retested": retested}
            if outcome["promote"]:
                client.set_registered_model_alias(self.model_name, "champion", version)
                outcome["champion_version"] = int(version)
        client.set_model_version_tag(self.model_name, version, "promotion", json.dumps(outcome))
        client.log_dict(run_id, outcome, "promotion.json")
        self.log_metrics(run_id, {"challenger_accuracy": accuracy, "champion_accuracy": champion_accuracy})
        return outcome


COMPLETE = ".complete"
"""Written last inside a finished download: the path of what was downloaded, relative to it."""


def _cached_download(text: str, root: Path) -> Path:
    """A registry model on local disk, safe when many calls run at once. An alias is first
    read as the version it points at; a version (or a run's artifact) never changes, so its
    download is kept under the store and the version, made in a temporary folder and renamed
    into place whole, and never deleted under a reader. The first finished download wins; a
    concurrent one is discarded. A reference that can move without an alias
    (``models:/<name>/latest``, a stage) is downloaded into a folder of its own each time."""
    import hashlib

    import mlflow
    from mlflow import MlflowClient

    alias = re.fullmatch(r"models:/([^@/]+)@([^@/]+)", text)
    if alias:
        text = f"models:/{alias[1]}/{MlflowClient().get_model_version_by_alias(alias[1], alias[2]).version}"
    fixed = bool(re.fullmatch(r"models:/[^@/]+/\d+", text)) or text.startswith("runs:/")
    store = hashlib.sha256(mlflow.get_tracking_uri().encode()).hexdigest()[:12]
    dest = root / store / re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    if fixed and (dest / COMPLETE).is_file():
        return dest / (dest / COMPLETE).read_text()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(".download-", dir=dest.parent)
    try:
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(tmp)))
        (tmp / COMPLETE).write_text(str(got.relative_to(tmp)))
        if not fixed:
            return got
        try:
            os.rename(tmp, dest)  # atomic; refused when another call's download is already there
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / (dest / COMPLETE).read_text()


def resolve_model(spec: str | Path, uri: str | None = None, cache: Path | str | None = None,
                  int8: bool = False) -> Path:
    """An ONNX file from a path (file, or folder holding ``model.onnx``) or a registry URI
    such as ``models:/smh-defect-classifier@champion``, from MLflow through the download
    cache in ``cache`` (default ``$SMH_MODEL_CACHE`` or ``~/.cache/smh-ml/models``), which
    concurrent calls share safely (:func:`_cached_download`).

    With ``int8`` the gated ``model.int8.onnx`` beside it is used; it exists only when it
    passed the accuracy gate, so asking for it without one is an error, not a silent fp32.
    """
    text = str(spec)
    if text.startswith(("models:/", "runs:/")):
        import mlflow

        connect(uri)
        root = Path(cache or os.environ.get("SMH_MODEL_CACHE", Path.home() / ".cache" / "smh-ml" / "models"))
        try:
            path = _cached_download(text, root)
        except Exception as exc:  # MLflow raises several types for a missing model or alias
            raise FileNotFoundError(f"{text}: cannot load it from the registry at "
                                    f"{mlflow.get_tracking_uri()} ({exc})") from None
    else:
        path = Path(text)
    if path.is_dir():
        # an MLflow model folder keeps the file under data/ (versions before that: at the top)
        path = path / "data" / "model.onnx" if (path / "data" / "model.onnx").is_file() else path / "model.onnx"
    if int8:
        path = path.with_name(path.stem + ".int8.onnx")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no int8 model (none was quantized, or it failed the accuracy gate)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX model")
    return path




class RegistrySource:
    """A model the station (smh_ml.deploy.watch) follows: a registry URI whose alias may move
    (``models:/<name>@<alias>``), or a file or folder (its version is the file's stamp)."""

    def __init__(self, spec: str | Path, uri: str | None = None, int8: bool = False):
        self.spec, self.uri, self.int8 = str(spec), uri, int8
        match = re.fullmatch(r"models:/([^@/]+)@([^@/]+)", self.spec)
        self.alias = match.groups() if match else None

    def version(self) -> str:
        if self.alias is None and self.spec.startswith(("models:/", "runs:/")):
            return self.spec  # a pinned version or run: it never moves, so it is fetched once
        if self.alias is None:
            from smh_ml.deploy.watch import FileSource

            return FileSource(resolve_model(self.spec, self.uri, int8=self.int8)).version()
        connect(self.uri)
        from mlflow import MlflowClient

        name, alias = self.alias
        self._number = MlflowClient().get_model_version_by_alias(name, alias).version
        return f"{name}/{self._number}"

    def fetch(self) -> Path:
        """The model of the version last read (an alias that moves in between does not mix
        one version's label with another's file); the alias itself before any read."""
        number = getattr(self, "_number", None)
        spec = f"models:/{self.alias[0]}/{number}" if self.alias and number else self.spec
        return resolve_model(spec, self.uri, int8=self.int8)
