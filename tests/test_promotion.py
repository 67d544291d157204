"""Promotion: a strict gain beyond the test set's noise, never below the trivial model, and a
compare-and-set that concurrent registrations cannot interleave."""

import threading
import time

import pytest

from smh_ml.tracking.promotion import noise_margin, promotion_decision
from smh_ml.tracking.tracker import Tracker


def test_the_noise_margin_shrinks_with_the_test_set():
    assert noise_margin(0.9, None) == 0.0
    assert noise_margin(0.9, 100) == pytest.approx(0.03)
    assert noise_margin(0.9, 400) == pytest.approx(0.015)
    assert noise_margin(1.0, 100) == pytest.approx(0.01)  # never zero: one capture in a hundred


def test_promotion_needs_a_strict_gain_beyond_the_noise():
    assert not promotion_decision(0.80, 0.80)["promote"]  # equal is not better
    assert promotion_decision(0.81, 0.80)["promote"]  # no test size: any strict gain
    small = promotion_decision(0.82, 0.80, test_size=268)  # 2 points on 268 captures: within noise
    assert not small["promote"] and small["required_gain"] == pytest.approx(noise_margin(0.80, 268))
    assert promotion_decision(0.86, 0.80, test_size=268)["promote"]
    assert not promotion_decision(0.99, 0.80, same_test_set=False)["promote"]
    trivial = promotion_decision(0.72, None, baseline_accuracy=0.709, baseline_margin=0.02)
    assert not trivial["promote"] and "trivial baseline" in trivial["reason"]
    record = promotion_decision(0.90, 0.80, test_size=100)
    assert {"challenger_accuracy", "champion_accuracy", "required_gain", "reason", "metric"} <= set(record)


def _two_registrations_at_once(tracker, tmp_path, monkeypatch) -> None:
    """Two runs register at once; the decision is slowed so that, unserialised, both would read
    'no champion' and the later alias write would win whatever its score."""
    import smh_ml.tracking.tracker as tracking
    from smh_ml.data.patching import Geometry
    from smh_ml.deploy.card import ModelCard
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.tracking.packaging import package_model

    card = ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(rows=1, cols=1, patch=16))
    package = package_model(export_onnx(build("baseline_cnn", 3, 16).eval(), tmp_path / "m.onnx", card),
                            tmp_path / "pkg")
    runs = [tracker.client().create_run(tracker.experiment_id()).info.run_id for _ in range(2)]
    decide = tracking.promotion_decision

    def slow_decision(*args, **kwargs):
        time.sleep(1.5)
        return decide(*args, **kwargs)

    monkeypatch.setattr(tracking, "promotion_decision", slow_decision)
    outcomes = {}

    def register(run, accuracy, delay):
        time.sleep(delay)
        outcomes[accuracy] = Tracker(tracker.uri, tracker.artifact_root, tracker.experiment,
                                     tracker.model_name).register(run, package, accuracy, "t1", 0.0, {})

    threads = [threading.Thread(target=register, args=(runs[0], 0.95, 0.0)),
               threading.Thread(target=register, args=(runs[1], 0.80, 0.5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    champion = tracker.client().get_model_version_by_alias(tracker.model_name, "champion")
    assert float(champion.tags["test_accuracy"]) == 0.95
    assert outcomes[0.95]["promote"] and not outcomes[0.80]["promote"]
    assert outcomes[0.80]["champion_accuracy"] == 0.95  # the later run saw the earlier champion


def test_concurrent_registrations_leave_the_better_model_champion(tmp_path, monkeypatch):
    _two_registrations_at_once(Tracker(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "arts"), "e", "m"),
                               tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.e2e
def test_concurrent_registrations_on_a_shared_mlflow_server_leave_the_better_model_champion(
        mlflow_server, tmp_path, monkeypatch):
    """The store of several machines: no file lock to share, so the registry's own mutex
    (smh_ml.tracking.registry_lock) serialises the compare-and-set; it is gone afterwards."""
    from smh_ml.tracking.registry_lock import lock_name

    tracker = Tracker(mlflow_server, str(tmp_path / "unused"), "shared", "shared-model")
    _two_registrations_at_once(tracker, tmp_path, monkeypatch)
    names = {m.name for m in tracker.client().search_registered_models()}
    assert "shared-model" in names and lock_name("shared-model") not in names


def test_the_registry_lock_lets_one_holder_in_and_breaks_a_dead_holders_lock(tmp_path):
    import subprocess
    import sys

    from mlflow.exceptions import MlflowException

    from smh_ml.tracking.registry_lock import HOLDER_TAG, SINCE_TAG, lock_name, registry_lock

    client = Tracker(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "arts"), "e", "m").client()
    inside, overlaps = [], []

    def hold(pause):
        with registry_lock(client, "m", poll_seconds=0.05):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(pause)
            inside.pop()

    threads = [threading.Thread(target=hold, args=(0.3,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1]  # never two holders at once
    with pytest.raises(MlflowException):
        client.get_registered_model(lock_name("m"))  # released
    # a live holder elsewhere: waited for, then a clear error that names the lock
    client.create_registered_model(lock_name("m"), tags={HOLDER_TAG: "another-host:1:x", SINCE_TAG: str(time.time())})
    with pytest.raises(TimeoutError, match="m--promotion-lock.*another-host"):
        with registry_lock(client, "m", wait_seconds=0.3, poll_seconds=0.05):
            pass
    # a holder of this machine that is gone, or one older than the stale age: broken
    client.delete_registered_model(lock_name("m"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    client.create_registered_model(lock_name("m"), tags={HOLDER_TAG: f"{socket.gethostname()}:{dead.stdout.strip()}:x",
                                                         SINCE_TAG: str(time.time())})
    with registry_lock(client, "m", wait_seconds=5) as token:
        assert client.get_registered_model(lock_name("m")).tags[HOLDER_TAG] == token
    client.create_registered_model(lock_name("m"), tags={HOLDER_TAG: "another-host:1:x", SINCE_TAG: "0"})
    with registry_lock(client, "m", wait_seconds=5):
        pass


def test_the_baseline_floor_grows_with_the_test_sets_noise():
    from smh_ml.tracking.promotion import accuracy_floor

    # 4 of 9 right against a 3-of-9 majority baseline is one lucky capture, not a model
    assert not promotion_decision(4 / 9, None, baseline_accuracy=3 / 9, test_size=9)["promote"]
    assert accuracy_floor(3 / 9, 0.02, test_size=9) == pytest.approx(3 / 9 + noise_margin(3 / 9, 9))
    assert promotion_decision(8 / 9, None, baseline_accuracy=3 / 9, test_size=9)["promote"]
    # on a large test set the fixed margin is what binds
    assert accuracy_floor(0.709, 0.05, test_size=100_000) == pytest.approx(0.759)
    assert accuracy_floor(None, 0.02, floor=0.5, test_size=9) == 0.5
    assert accuracy_floor(3 / 9, -1.0, test_size=9) == 0.0  # a negative margin turns the rule off
