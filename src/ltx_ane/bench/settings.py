"""What a benchmark run measures: device presets (sizes, widths, run counts), the settings of one run, and which
backends this machine can run (without importing MLX, torch or coremltools to find out)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ltx_ane.errors import LtxAneError
from ltx_ane.models.registry import NAMES
from ltx_ane.runtime.choice import reference_available

COREML_UNITS = ("CPU_AND_NE", "CPU_AND_GPU", "ALL", "CPU_ONLY")
# "coreml" alone means these: CPU_ONLY is a slow baseline worth asking for, not a default.
COREML_DEFAULT_UNITS = ("CPU_AND_NE", "CPU_AND_GPU", "ALL")
BACKENDS = ("mlx", "torch", *(f"coreml:{u}" for u in COREML_UNITS))
# The bench's parity gate: a backend's whole-component output against the fp32 reference (bf16 and fp16 end to
# end, so lower than the conversion gate, coreml.package.PACKAGE_MIN_PSNR_DB, which compares one fp16 program).
BENCH_MIN_PSNR_DB = 30.0
NOISY_SPREAD = 0.25  # (max - min) / median above this marks a row as noisy


@dataclass(frozen=True)
class DeviceProfile:
    """A preset of sizes, widths and run counts for one kind of machine."""

    name: str
    description: str
    sizes: dict  # component -> list of latent tiles
    runs: int
    warmup: int
    vae_widths: dict | None = None  # config overrides for random weights (None: the real widths)
    upscaler_widths: dict | None = None
    # Seconds per section (one component's rows; the backends-together run). Checked between tiles and passes, so
    # a section stops after the tile that crossed it; what it skipped is reported.
    section_budget_s: float = 60.0


_SMALL = [(2, 2, 3), (3, 3, 4)]
DEVICE_PROFILES = {
    "tiny": DeviceProfile(
        "tiny", "tests: minimal widths, one tiny latent per component",
        {"decoder": [(2, 3, 3)], "encoder": [(2, 1, 2)], "spatial": [(2, 2, 2)], "temporal": [(2, 2, 2)]}, 2, 1,
        {"decoder_base_channels": 4, "latent_channels": 8}, {"mid_channels": 32, "num_blocks_per_stage": 1}, 120.0),
    "cpu": DeviceProfile(
        "cpu", "a CPU: reduced widths (VAE decoder base 8 and 16 latent channels, upscalers 64 wide), tiny latents",
        {c: list(_SMALL) for c in NAMES}, 3, 1,
        {"decoder_base_channels": 8, "latent_channels": 16}, {"mid_channels": 64}, 300.0),
    "gpu": DeviceProfile(
        "gpu", "a CUDA GPU: real widths, tile 65x512x512 and 121x512x768 (VAE), the upscalers' real clips",
        {"decoder": [(9, 16, 16), (16, 16, 24)], "encoder": [(9, 16, 16), (16, 16, 24)],
         "spatial": [(16, 8, 12), (16, 16, 24)], "temporal": [(9, 16, 24), (16, 16, 24)]}, 5, 2,
        section_budget_s=55.0),  # 4 components + backends together within 5 minutes
    "mac": DeviceProfile(
        "mac", "Apple silicon: real widths at tile shapes a Core ML package is converted for",
        {"decoder": [(3, 8, 8), (5, 16, 16)], "encoder": [(3, 8, 8), (5, 16, 16)],
         "spatial": [(5, 8, 12), (9, 8, 12)], "temporal": [(5, 16, 24), (9, 16, 24)]}, 5, 2,
        section_budget_s=240.0),  # converting for Core ML takes minutes per tile
}


@dataclass
class Settings:
    components: tuple[str, ...] = NAMES
    sizes: dict = field(default_factory=dict)  # component -> list of tiles
    backends: tuple[str, ...] = ("mlx", "torch", *(f"coreml:{u}" for u in COREML_DEFAULT_UNITS))
    device_profile: DeviceProfile = DEVICE_PROFILES["cpu"]
    dtype: str = "bf16"
    runs: int = 3
    warmup: int = 1
    min_psnr: float = BENCH_MIN_PSNR_DB
    section_budget_s: float | None = None  # None: the device profile's
    torch_device: str = "auto"
    vae: str | None = None
    spatial: str | None = None
    temporal: str | None = None
    config: str | None = None
    random_weights: bool = False
    seed: int = 0
    work_dir: Path | None = None
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- backend choice


def expand_backends(names) -> tuple[str, ...]:
    """Validate backend names; ``coreml`` stands for the default compute units."""
    out = []
    for name in names:
        expanded = [f"coreml:{u}" for u in COREML_DEFAULT_UNITS] if name == "coreml" else [name]
        for b in expanded:
            if b not in BACKENDS:
                raise LtxAneError(f"unknown backend {name!r} (choose from mlx, torch, coreml, {', '.join(BACKENDS[2:])})")
            if b not in out:
                out.append(b)
    if not out:
        raise LtxAneError("no backend given")
    return tuple(out)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(backend: str, platform: str | None = None) -> str | None:
    """Why this machine cannot run a backend, or None when it can. Never imports coremltools off macOS."""
    platform = platform or sys.platform
    if backend == "mlx":
        return None if _has("mlx") else "needs MLX (pip install mlx)"
    if backend == "torch":
        return None if reference_available() else "needs torch and ltx-core (pip install 'ltx-ane[reference]')"
    if platform != "darwin":
        return "needs macOS (Core ML runs only there)"
    if not _has("coremltools"):
        return "needs coremltools (pip install 'ltx-ane[coreml]')"
    if not reference_available():
        return "needs torch and ltx-core to convert (pip install 'ltx-ane[coreml]')"
    return None


def resolve_torch_device(name: str) -> str:
    """``auto``: the accelerator the pipelines' torch backend runs on (CUDA, MPS, else the CPU)."""
    if name != "auto":
        return name
    if not _has("torch"):
        return "cpu"
    from ltx_ane.runtime.backends import torch_accelerator

    return torch_accelerator()


def auto_device_profile() -> str:
    if sys.platform == "darwin":
        return "mac"
    if _has("mlx"):
        import mlx.core as mx

        if mx.default_device() == mx.gpu:
            return "gpu"
    return "cpu"


def parse_sizes(items, components) -> dict:
    """``FxHxW`` (every component) or ``component:FxHxW``, latent units."""
    out: dict = {}
    for item in items:
        comp, _, dims = item.rpartition(":")
        targets = [comp] if comp else list(components)
        if comp and comp not in NAMES:
            raise LtxAneError(f"size {item!r}: unknown component {comp!r} (choose from {', '.join(NAMES)})")
        try:
            tile = tuple(int(v) for v in dims.lower().split("x"))
        except ValueError:
            tile = ()
        if len(tile) != 3 or min(tile) < 1:
            raise LtxAneError(f"size {item!r} is not [component:]FxHxW in latent units, e.g. decoder:3x4x4")
        for c in targets:
            out.setdefault(c, [])
            if tile not in out[c]:
                out[c].append(tile)
    return out
