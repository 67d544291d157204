"""OpenVINO as an optional backend for the exported ONNX file (``pip install '.[openvino]'``).

The same ``model.onnx`` the pipeline exports, compiled by OpenVINO's CPU plugin instead of
onnxruntime. :class:`OpenVinoSession` answers the two calls of an onnxruntime session that
:mod:`smh_ml.deploy.runtime` makes (``run`` and ``get_outputs``), so the engine, its decision
rule and the unknown score stay one path whatever runs the network. The engine's default,
``backend="auto"`` (smh_ml.deploy.engine.choose_backend), runs ``bf16`` here only for a model
whose precision gate accepted it on its validation captures, on a CPU with native bf16; else
onnxruntime. docs/DEPLOY.md has the measured comparison.

``precision``: ``f32`` keeps the fp32 arithmetic the parity checks were made with; ``bf16``
lets the CPU plugin run in bfloat16 where the processor has it (AVX-512 bf16, AMX), which is
OpenVINO's default there and changes probabilities in the third decimal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRECISIONS = ("f32", "bf16")


@dataclass(frozen=True)
class _Output:
    name: str


class OpenVinoSession:
    """An ONNX (or OpenVINO IR ``.xml``) model compiled for the CPU, answering like an
    onnxruntime ``InferenceSession`` for :func:`smh_ml.deploy.runtime.onnx_predict`."""

    def __init__(self, path: Path | str, threads: int | None = None, precision: str = "f32"):
        try:
            import openvino as ov
        except ImportError as exc:  # the optional extra is not installed
            raise RuntimeError("the OpenVINO backend needs the 'openvino' extra: pip install '.[openvino]'") from exc
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._outputs = [o.get_any_name() for o in self.compiled.outputs]
        self._request = self.compiled.create_infer_request()

    def get_outputs(self) -> list[_Output]:
        return [_Output(name) for name in self._outputs]

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs ``names`` (all when None) for ``feeds`` (input name -> array)."""
        result = self._request.infer(feeds)
        by_name = {port.get_any_name(): value for port, value in result.items()}
        return [np.asarray(by_name[n]) for n in (names or self._outputs)]
