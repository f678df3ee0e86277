"""Running converted packages on a Mac: compile once (cached), run on a chosen compute unit, MLX in and out.

Core ML can load and run models only on macOS; everywhere else this module raises a one-line error
(conversion and inspection work on any OS). Compiling a ~1 GB package takes seconds to minutes, so the
compiled ``.mlmodelc`` is cached under ``$LTX_ANE_CACHE/coreml`` (default ``~/.cache/ltx-ane``), named by the
package's cache key: a re-converted package gets a new key, never a stale compiled model.

Inputs and outputs keep the programs' layout (frames on the batch axis); ``layout.py`` has the host-side
patchify/unpatchify, and ``tile_shape_for`` maps an input shape back to its function.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from ltx_ane.cache import cache_root
from ltx_ane.errors import LtxAneError

COMPUTE_UNITS = ("CPU_AND_NE", "CPU_AND_GPU", "ALL", "CPU_ONLY")


def require_macos() -> None:
    if sys.platform != "darwin":
        raise LtxAneError(
            f"Core ML models run only on macOS (this is {sys.platform}); "
            "`ltx-ane convert` and `ltx-ane inspect` work here, running needs a Mac"
        )


def cache_dir() -> Path:
    return cache_root() / "coreml"


def compile_cached(package: str | Path) -> Path:
    """The compiled model of a package, compiling it the first time (atomically: a killed compile leaves nothing)."""
    require_macos()
    from ltx_ane.coreml.package import read_metadata
    from ltx_ane.coreml.deps import import_coremltools

    ct = import_coremltools()
    package = Path(package)
    key = read_metadata(package).get("ltx_ane.cache_key")
    if not key:
        raise LtxAneError(f"{package} was not made by `ltx-ane convert` (no ltx_ane.cache_key metadata)")
    target = cache_dir() / f"{key}.mlmodelc"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{key}.{os.getpid()}.mlmodelc")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        ct.utils.compile_model(str(package), destination_path=str(partial))
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


@dataclass
class Placement:
    """Where Core ML plans to run each op of one function: op counts and estimated cost share per device."""

    function: str
    compute_units: str
    ops_by_device: dict[str, dict[str, int]]  # device -> {op type: count}
    cost_by_device: dict[str, float]  # device -> share of the estimated cost (0..1)

    def summary(self) -> str:
        parts = [f"{dev}: {sum(ops.values())} ops, {100 * self.cost_by_device.get(dev, 0):.0f}% of cost"
                 for dev, ops in sorted(self.ops_by_device.items())]
        return f"{self.function} on {self.compute_units}: " + "; ".join(parts)


class CoreMLComponent:
    """A converted component, ready to run: ``component(x)`` with an MLX array of one of its tile shapes."""

    def __init__(self, package: str | Path, compute_units: str = "CPU_AND_NE"):
        require_macos()
        if compute_units not in COMPUTE_UNITS:
            raise LtxAneError(f"unknown compute unit {compute_units!r} (choose from {', '.join(COMPUTE_UNITS)})")
        from ltx_ane.coreml.package import read_metadata

        self.package = Path(package)
        self.compute_units = compute_units
        self.metadata = read_metadata(self.package)
        missing = [k for k in ("component", "input_name", "output_name", "functions") if not self.metadata.get(f"ltx_ane.{k}")]
        if missing:
            raise LtxAneError(f"{self.package} was not made by `ltx-ane convert` (no {', '.join(missing)} in its metadata)")
        self.component = self.metadata["ltx_ane.component"]
        self.input_name = self.metadata["ltx_ane.input_name"]
        self.output_name = self.metadata["ltx_ane.output_name"]
        self.precision = self.metadata.get("ltx_ane.precision", "fp16")
        # tile name -> {"function": name, "input": shape}
        self.functions = json.loads(self.metadata["ltx_ane.functions"])
        self._compiled = None
        self._models = {}

    @property
    def compiled(self) -> Path:
        """The compiled model, compiled on first use (so a benchmark's first call counts compiling)."""
        if self._compiled is None:
            self._compiled = compile_cached(self.package)
        return self._compiled

    def _ct(self):
        from ltx_ane.coreml.deps import import_coremltools

        return import_coremltools()

    def function_for(self, shape) -> str:
        for entry in self.functions.values():
            if tuple(entry["input"]) == tuple(shape):
                return entry["function"]
        known = ", ".join(str(tuple(e["input"])) for e in self.functions.values())
        raise LtxAneError(f"{self.package.name} has no function for input shape {tuple(shape)} (it has {known}); convert with that tile")

    def _model(self, function: str):
        if function not in self._models:
            ct = self._ct()
            self._models[function] = ct.models.CompiledMLModel(
                str(self.compiled), compute_units=getattr(ct.ComputeUnit, self.compute_units), function_name=function
            )
        return self._models[function]

    def predict_numpy(self, x):
        import numpy as np

        dtype = np.float16 if self.precision == "fp16" else np.float32
        model = self._model(self.function_for(x.shape))
        return model.predict({self.input_name: np.ascontiguousarray(x, dtype=dtype)})[self.output_name]

    def __call__(self, x):
        """MLX array in (frames on the batch axis), MLX array out, in the input's dtype."""
        import mlx.core as mx
        import numpy as np

        out = self.predict_numpy(np.array(x.astype(mx.float32)))
        return mx.array(out).astype(x.dtype)

    def placement(self, function: str | None = None) -> Placement:
        """Per-op device placement from MLComputePlan (macOS 14.4+)."""
        ct = self._ct()
        from coremltools.models.compute_plan import MLComputePlan

        function = function or next(iter(self.functions.values()))["function"]
        plan = MLComputePlan.load_from_path(str(self.compiled), compute_units=getattr(ct.ComputeUnit, self.compute_units))
        program = plan.model_structure.program
        if program is None:
            raise LtxAneError(f"{self.package.name} is not an ML program")
        ops_by_device: dict[str, Counter] = defaultdict(Counter)
        cost: dict[str, float] = defaultdict(float)
        for op in program.functions[function].block.operations:
            if op.operator_name == "const":
                continue
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            device = _device_name(usage.preferred_compute_device) if usage else "unknown"
            ops_by_device[device][op.operator_name] += 1
            estimate = plan.get_estimated_cost_for_mlprogram_operation(op)
            cost[device] += estimate.weight if estimate else 0.0
        return Placement(function, self.compute_units, {k: dict(v) for k, v in ops_by_device.items()}, dict(cost))


def _device_name(device) -> str:
    name = type(device).__name__
    return {"MLNeuralEngineComputeDevice": "ANE", "MLGPUComputeDevice": "GPU", "MLCPUComputeDevice": "CPU"}.get(name, name)
