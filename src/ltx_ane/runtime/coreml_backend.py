"""The Core ML backend: a converted package with the host-side layout changes around it, one table entry per
calling convention (``models.registry``'s ``io``). The programs have no batch axis (frames sit there) and leave
patchify/unpatchify to the host (``coreml.layout``)."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ltx_ane.coreml import layout
from ltx_ane.errors import LtxAneError
from ltx_ane.runtime.backends import Backend, stats_arrays
from ltx_ane.runtime.choice import DEFAULT_COMPUTE_UNIT


class CoreMLBackend(Backend):
    """A converted package through ``coreml.runtime.CoreMLComponent`` (or anything with its ``predict_numpy``,
    ``function_for`` and ``metadata``), with the host-side layout changes around it. Core ML's memory is outside
    the process's allocators, so no peak is reported."""

    any_shape = False
    dtype = "fp16"

    def __init__(self, runner, component: str, stats=None, allow_ungated: bool = False, identity: dict | None = None):
        super().__init__(component)
        meta = getattr(runner, "metadata", {}) or {}
        check_gates(meta, component, allow_ungated)
        if identity is not None:
            check_identity(meta, component, identity)
        self.runner, self.stats = runner, stats
        self.device = getattr(runner, "compute_units", DEFAULT_COMPUTE_UNIT)
        self.name = f"coreml:{self.device}"
        self.layout = _COREML_LAYOUTS[self.spec.io]

    def load(self) -> None:
        """Compile the package now (cached), so a package this Mac cannot compile fails while backends are built,
        where it is dropped with a note, not mid-run (``coreml.runtime.CoreMLComponent.compiled``)."""
        getattr(self.runner, "compiled", None)

    def supports(self, shape) -> bool:
        try:
            self.runner.function_for(self.layout.program_shape(shape))
        except LtxAneError:
            return False
        return True

    def prepare(self, x):
        """Per batch item: the program's input (the programs have no batch axis: frames sit there)."""
        return [self.layout.to_program(self, item) for item in x]

    def run(self, items):
        return [self.runner.predict_numpy(item) for item in items]

    def to_host(self, outs) -> np.ndarray:
        return np.ascontiguousarray(np.stack([self.layout.from_program(self, np.asarray(y, np.float32)) for y in outs]))

    def extra(self) -> dict:
        """Where Core ML placed the ops of the first function (MLComputePlan needs macOS 14.4+)."""
        try:
            p = self.runner.placement()
        except Exception as err:  # timing stands without it
            text = f"{type(err).__name__}: {err}".strip().splitlines()
            return {"placement": {"error": text[0][:300] if text else type(err).__name__}}
        total = sum(sum(ops.values()) for ops in p.ops_by_device.values())
        return {"placement": {
            "ane_op_share": sum(p.ops_by_device.get("ANE", {}).values()) / total if total else None,
            "ane_cost_share": p.cost_by_device.get("ANE"),
            "ops_by_device": {d: sum(ops.values()) for d, ops in p.ops_by_device.items()},
            "cost_by_device": p.cost_by_device,
        }}

    def release(self) -> None:
        self.runner = None
        gc.collect()


class GateRefused(LtxAneError):
    """A package the parity gates do not let run: never chosen by ``auto``; an explicit choice fails with the reason."""


def check_gates(meta: dict, component: str, allow_ungated: bool = False) -> None:
    """Fail closed: a package runs only with its measured fp16 PSNR (and, when compressed, its compressed PSNR) at
    or above ``PACKAGE_MIN_PSNR_DB``. ``allow_ungated`` admits a package whose measurement is missing (made with
    ``--no-fp16-check``), never one that measured below the bar."""
    from ltx_ane.coreml.package import META_PREFIX, PACKAGE_MIN_PSNR_DB as bar

    got = meta.get(META_PREFIX + "component")
    if got != component:
        raise GateRefused(f"Core ML package holds the {got or 'no ltx-ane component'}, not the {component}")
    checks = [("fp16", meta.get(META_PREFIX + "fp16_psnr_db"), "convert without --no-fp16-check")]
    if meta.get(META_PREFIX + "compression"):
        checks.append((f"{meta[META_PREFIX + 'compression']}-compressed", meta.get(META_PREFIX + "compressed_psnr_db"),
                       "convert it again"))
    for what, measured, remedy in checks:
        if not measured:
            if allow_ungated:
                continue
            raise GateRefused(f"the Core ML {component} has no measured {what} PSNR, so nothing says its output is "
                              f"right; {remedy}, or pass --allow-ungated-package to run it anyway")
        if float(measured) < bar:
            raise GateRefused(f"the Core ML {component} failed its parity gate ({float(measured):.1f} dB {what} PSNR, "
                              f"bar {bar:g} dB); not using it")


def check_identity(meta: dict, component: str, identity: dict) -> None:
    """Refuse a package converted from other weights or another config than the model being run (random weights,
    another checkpoint): it would decode the user's video with the wrong model. ``identity``: ``model_identity``."""
    from ltx_ane.coreml.package import META_PREFIX

    for key, what in (("config_hash", "config"), ("weights_digest", "weights")):
        recorded = meta.get(META_PREFIX + key)
        if recorded != identity[key]:
            found = f"{recorded}" if recorded else "none recorded"
            raise GateRefused(f"the Core ML {component} package was converted from another {what} than the model "
                              f"being run ({key} {found}, model {identity[key]}); convert it from this checkpoint")


@dataclass(frozen=True)
class _CoreMLLayout:
    """One calling convention's host-side changes around a Core ML program (see ``coreml.layout``)."""

    program_shape: Callable  # the host input's shape -> the program's input shape
    to_program: Callable  # (backend, one batch item) -> program input
    from_program: Callable  # (backend, program output) -> one batch item of the host output


def _upsample_in(backend, item):
    mean, std = stats_arrays(backend.stats, 0, 4)
    return layout.latent_to_frames(item * std + mean)


def _upsample_out(backend, y):
    mean, std = stats_arrays(backend.stats, 0, 4)
    return (layout.frames_to_latent(y) - mean) / std


_COREML_LAYOUTS = {
    "decode": _CoreMLLayout(
        lambda shape: (shape[1], shape[4], shape[2], shape[3]),
        lambda backend, item: layout.latent_to_frames(item.transpose(3, 0, 1, 2)),
        lambda backend, y: layout.frames_to_video(y).transpose(1, 2, 3, 0)),
    "encode": _CoreMLLayout(
        lambda shape: (shape[1], shape[4] * 16, shape[2] // 4, shape[3] // 4),
        lambda backend, item: layout.video_to_frames(item.transpose(3, 0, 1, 2)),
        lambda backend, y: y.transpose(0, 2, 3, 1)),
    "upsample": _CoreMLLayout(lambda shape: (shape[2], shape[1], shape[3], shape[4]), _upsample_in, _upsample_out),
}
