"""The registry download cache: many predicts at once on a cold cache, an alias that moves."""

import os
import subprocess
import sys

import pytest

from smh_ml.data.patching import Geometry
from smh_ml.deploy.card import ModelCard


@pytest.fixture()
def registry(tmp_path):
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.tracking.packaging import package_model
    from smh_ml.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, str(tmp_path / "arts"), "e", "m")
    card = ModelCard("baseline_cnn", ("defect-free", "scratch"), Geometry(1, 2, 32))
    for i, accuracy in enumerate((0.6, 1.0)):
        package = package_model(export_onnx(build("baseline_cnn", 2, 32).eval(), tmp_path / f"m{i}.onnx", card),
                                tmp_path / f"pkg{i}")
        run = tracker.client().create_run(tracker.experiment_id()).info.run_id
        assert tracker.register(run, package, accuracy, "t1", 0.0, {})["promote"]
        if i == 0:
            tracker.client().set_registered_model_alias("m", "first", "1")
    return uri


def test_eight_resolves_at_once_on_a_cold_cache_all_get_the_model(registry, tmp_path):
    cache = tmp_path / "cache"
    code = ("import sys; from smh_ml.tracking.tracker import resolve_model; from smh_ml.deploy import Engine; "
            "p = resolve_model('models:/m@champion', sys.argv[1], cache=sys.argv[2]); Engine(p); print(p)")
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    calls = [subprocess.Popen([sys.executable, "-c", code, registry, str(cache)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [call.communicate(timeout=300) for call in calls]
    assert all(call.returncode == 0 for call in calls), [err[-800:] for _, err in results]
    paths = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(paths) == 1 and "models_m_2" in paths.pop()  # the champion's version, one shared copy
    assert not [p for p in cache.rglob(".download-*")]  # the losers' downloads are gone


def test_an_alias_reads_as_the_version_it_points_at(registry, tmp_path):
    from smh_ml.tracking.tracker import resolve_model

    cache = tmp_path / "cache"
    champion = resolve_model("models:/m@champion", registry, cache=cache)
    first = resolve_model("models:/m@first", registry, cache=cache)
    assert champion != first and "models_m_2" in str(champion) and "models_m_1" in str(first)
    assert champion == resolve_model("models:/m/2", registry, cache=cache)  # reused, not downloaded again
    with pytest.raises(FileNotFoundError, match="models:/m@nosuch: cannot load it from the registry"):
        resolve_model("models:/m@nosuch", registry, cache=cache)
