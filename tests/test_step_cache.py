"""The resumable step (smh_ml.workflows.step_cache): reused while its inputs are unchanged."""

import json

import pytest

from smh_ml.workflows.step_cache import run_step


def _writer(folder, calls):
    def compute():
        calls.append(1)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(json.dumps({"run": len(calls)}))
    return compute


def test_a_step_runs_once_for_the_same_inputs(tmp_path):
    folder, calls = tmp_path / "step", []
    first = run_step(folder, {"lr": 0.1}, _writer(folder, calls))
    assert first.result == {"run": 1} and not first.reused and first.seconds >= 0
    again = run_step(folder, {"lr": 0.1}, _writer(folder, calls))
    assert again.reused and again.result == {"run": 1} and len(calls) == 1
    # a changed input, or a result that asks for more, runs it again
    assert run_step(folder, {"lr": 0.2}, _writer(folder, calls)).result == {"run": 2}
    assert run_step(folder, {"lr": 0.2}, _writer(folder, calls), rerun_if=lambda r: r["run"] < 3).result == {"run": 3}


def test_a_step_stopped_before_its_stamp_runs_again(tmp_path):
    folder, calls = tmp_path / "step", []
    _writer(folder, calls)()  # the files of a run stopped before it stamped them
    assert not run_step(folder, {"lr": 0.1}, _writer(folder, calls)).reused and len(calls) == 2


def test_a_step_that_writes_no_result_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.json: the step finished without writing its result"):
        run_step(tmp_path / "step", {}, lambda: None)
