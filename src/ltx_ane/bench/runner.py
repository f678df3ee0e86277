"""Run every component on every backend this machine has, interleaved, against an fp32 reference.

Backends: ``mlx`` (MLX's default device: Metal on macOS, CUDA or CPU on Linux), ``torch`` (ltx-core, the
reference implementation, on CUDA when torch sees it, else the CPU) and ``coreml:<compute unit>`` (macOS only;
each (component, tile) is converted once, then loaded per compute unit). Rows for a backend this machine
cannot run are kept, with ``status: "skipped"`` and the reason (e.g. "needs macOS"), so a report made on Linux
says which rows a Mac must fill in.

Per component x tile, backends run interleaved: call 1 of every backend (the first-run time, which for Core ML
includes loading and compiling), then the remaining warm-ups and the timed runs in A/B/A/B order, each call a
whole call including its synchronisation. Tiles are latent units [F, h, w]; for the encoder, the latent grid of
its output (its input is the video that grid covers).
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ltx_ane.bench import flops as F
from ltx_ane.bench.machine import load, machine_info, versions
from ltx_ane.bench.timing import max_abs_err, psnr, summary, timed_call
from ltx_ane.errors import LtxAneError

COMPONENTS = ("decoder", "encoder", "spatial", "temporal")
COREML_UNITS = ("CPU_AND_NE", "CPU_AND_GPU", "ALL", "CPU_ONLY")
# "coreml" alone means these: CPU_ONLY is a slow baseline worth asking for, not a default.
COREML_DEFAULT_UNITS = ("CPU_AND_NE", "CPU_AND_GPU", "ALL")
BACKENDS = ("mlx", "torch", *(f"coreml:{u}" for u in COREML_UNITS))
DEFAULT_MIN_PSNR = 30.0
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


_SMALL = [(2, 2, 3), (3, 3, 4)]
DEVICE_PROFILES = {
    "tiny": DeviceProfile(
        "tiny", "tests: minimal widths, one tiny latent per component",
        {"decoder": [(2, 3, 3)], "encoder": [(2, 1, 2)], "spatial": [(2, 2, 2)], "temporal": [(2, 2, 2)]}, 2, 1,
        {"decoder_base_channels": 4, "latent_channels": 8}, {"mid_channels": 32, "num_blocks_per_stage": 1}),
    "cpu": DeviceProfile(
        "cpu", "a CPU: reduced widths (VAE decoder base 8 and 16 latent channels, upscalers 64 wide), tiny latents",
        {c: list(_SMALL) for c in COMPONENTS}, 3, 1,
        {"decoder_base_channels": 8, "latent_channels": 16}, {"mid_channels": 64}),
    "gpu": DeviceProfile(
        "gpu", "a CUDA GPU: real widths, tile 65x512x512 and 121x512x768 (VAE), the upscalers' real clips",
        {"decoder": [(9, 16, 16), (16, 16, 24)], "encoder": [(9, 16, 16), (16, 16, 24)],
         "spatial": [(16, 8, 12), (16, 16, 24)], "temporal": [(9, 16, 24), (16, 16, 24)]}, 5, 2),
    "mac": DeviceProfile(
        "mac", "Apple silicon: real widths at tile shapes a Core ML package is converted for",
        {"decoder": [(3, 8, 8), (5, 16, 16)], "encoder": [(3, 8, 8), (5, 16, 16)],
         "spatial": [(5, 8, 12), (9, 8, 12)], "temporal": [(5, 16, 24), (9, 16, 24)]}, 5, 2),
}


@dataclass
class Settings:
    components: tuple[str, ...] = COMPONENTS
    sizes: dict = field(default_factory=dict)  # component -> list of tiles
    backends: tuple[str, ...] = ("mlx", "torch", *(f"coreml:{u}" for u in COREML_DEFAULT_UNITS))
    device_profile: DeviceProfile = DEVICE_PROFILES["cpu"]
    dtype: str = "bf16"
    runs: int = 3
    warmup: int = 1
    min_psnr: float = DEFAULT_MIN_PSNR
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


def reference_available() -> bool:
    return _has("torch") and _has("ltx_core")


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
    if name != "auto":
        return name
    if not _has("torch"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
        if comp and comp not in COMPONENTS:
            raise LtxAneError(f"size {item!r}: unknown component {comp!r} (choose from {', '.join(COMPONENTS)})")
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


# ------------------------------------------------------------------------------------------- components


@dataclass
class Setup:
    """One component's weights and config, shared by all backends so they compute with the same numbers."""

    component: str
    config: dict
    checkpoint: Path | None
    weights: str  # description for the report
    reference: str = "ltx-core fp32"

    @property
    def time_scale(self) -> int:
        return 8


def _width_override(raw: dict, overrides: dict | None, vae: bool) -> dict:
    if not overrides:
        return raw
    raw = copy.deepcopy(raw)
    (raw["vae"] if vae else raw).update(overrides)
    return raw


def make_setup(component: str, s: Settings, tmp: Path) -> Setup:
    from ltx_ane.models.config import load_config_file, load_preset
    from ltx_ane.models.loading import Source
    from ltx_ane.models.video_vae.loader import vae_config

    vae = component in ("decoder", "encoder")
    given = None if s.random_weights else (s.vae if vae else getattr(s, component))
    if given:
        if vae:
            raw, path = vae_config(Source(checkpoint=given, config_file=s.config))
        else:
            from ltx_ane.models.upscaler.loader import upscaler_config

            cfg, path = upscaler_config(Source(checkpoint=given), component)
            raw = cfg.raw
        return Setup(component, raw, path, f"checkpoint {path}")
    if vae:
        raw = load_config_file(s.config) if s.config else load_preset("ltx2")
        raw = _width_override(raw, s.device_profile.vae_widths, True)
    else:
        raw = _width_override(load_preset(f"{component}-x2"), s.device_profile.upscaler_widths, False)
    overridden = s.device_profile.vae_widths if vae else s.device_profile.upscaler_widths
    desc = "random weights, " + (f"reduced widths {overridden}" if overridden else "real architecture")
    if not reference_available():
        return Setup(component, raw, None, desc, reference="MLX fp32 (ltx-core not installed)")
    from ltx_ane import reference as R

    # ltx-core's random weights, written in the real format: every backend then loads the same file.
    path = tmp / f"{component}.safetensors"
    if vae:
        model = (R.build_decoder if component == "decoder" else R.build_encoder)(raw, s.seed)
        tensors = R.vae_state_dict(**{component: model})
    else:
        model = R.build_upscaler(raw, s.seed)
        tensors = R.upscaler_state_dict(model)
    R.write_checkpoint(path, tensors, raw)
    del model, tensors
    return Setup(component, raw, path, desc)


def make_input(setup: Setup, tile, seed: int) -> np.ndarray:
    shape = F.input_shape(setup.component, setup.config, tile)
    rng = np.random.default_rng(seed)
    if setup.component == "encoder":
        return rng.uniform(-1, 1, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def pixel_frames(setup: Setup, tile, output_shape) -> int:
    """Video frames one call covers: what the decoder makes, the encoder reads, an upscaler's latent stands for."""
    if setup.component == "decoder":
        return int(output_shape[2])
    f = tile[0] if setup.component != "temporal" else output_shape[2]
    return (int(f) - 1) * setup.time_scale + 1


# ------------------------------------------------------------------------------------------- backends


class Backend:
    name = ""
    device = ""
    dtype = ""

    def load(self, setup: Setup) -> None: ...

    def prepare(self, x: np.ndarray, tile) -> None: ...

    def run(self): ...

    def sync(self) -> None: ...

    def reset_peak(self) -> None: ...

    def peak(self) -> int | None:
        return None

    def to_numpy(self, out) -> np.ndarray: ...

    def extra(self) -> dict:
        return {}

    def release(self) -> None: ...


class MlxBackend(Backend):
    name = "mlx"

    def __init__(self, dtype: str, seed: int):
        import mlx.core as mx

        self.mx, self.dtype, self.seed = mx, dtype, seed
        self.device = "gpu" if mx.default_device() == mx.gpu else "cpu"
        self.model = None

    def load(self, setup: Setup) -> None:
        self.model = load_mlx(setup, self.dtype, self.seed)

    def prepare(self, x, tile) -> None:
        from ltx_ane.models.loading import mlx_dtype

        self.x = self.mx.array(x).astype(mlx_dtype(self.dtype))
        self.mx.eval(self.x)

    def run(self):
        y = self.model(self.x)
        self.mx.eval(y)
        return y

    def reset_peak(self) -> None:
        self.mx.clear_cache()
        self.mx.reset_peak_memory()

    def peak(self) -> int:
        return int(self.mx.get_peak_memory())

    def to_numpy(self, out) -> np.ndarray:
        return np.array(out.astype(self.mx.float32))

    def release(self) -> None:
        self.model = self.x = None
        gc.collect()
        self.mx.clear_cache()


def load_mlx(setup: Setup, dtype: str, seed: int):
    from ltx_ane.models.loading import Source
    from ltx_ane.models.video_vae.loader import load_decoder, load_encoder
    from ltx_ane.models.upscaler.loader import load_upscaler

    if setup.checkpoint is None:
        # No file to share (ltx-core missing): the configured architecture with MLX's seeded random weights.
        import json

        tmp = Path(tempfile.mkdtemp()) / "config.json"
        tmp.write_text(json.dumps(setup.config))
        source = Source(config_file=str(tmp), random_weights=True)
    else:
        source = Source(checkpoint=str(setup.checkpoint))
    if setup.component == "decoder":
        return load_decoder(source, dtype, seed)
    if setup.component == "encoder":
        return load_encoder(source, dtype, seed)
    return load_upscaler(source, dtype, setup.component, seed)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, dtype: str, device: str):
        import torch

        self.torch, self.dtype, self.device = torch, dtype, device
        self.tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        self.model = None

    def load(self, setup: Setup) -> None:
        self.model = reference_fp32(setup).to(self.device, self.tdtype)

    def prepare(self, x, tile) -> None:
        self.x = self.torch.from_numpy(x).to(self.device, self.tdtype)

    def run(self):
        with self.torch.inference_mode():
            return self.model(self.x)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()
        elif self.device == "mps":
            self.torch.mps.synchronize()

    def reset_peak(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated()) if self.device.startswith("cuda") else None

    def to_numpy(self, out) -> np.ndarray:
        return out.float().cpu().numpy()

    def release(self) -> None:
        self.model = self.x = None
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()


def reference_fp32(setup: Setup):
    """ltx-core in float32 with the checkpoint's (bf16-rounded) weights."""
    from ltx_ane import reference as R

    if setup.component == "decoder":
        return R.reference_decoder_from_checkpoint(setup.checkpoint, setup.config)
    if setup.component == "encoder":
        return R.reference_encoder_from_checkpoint(setup.checkpoint, setup.config)
    return R.reference_upscaler_from_checkpoint(setup.checkpoint, setup.config)


class CoreMLBackend(Backend):
    """One compute unit of a converted package (macOS). Core ML's memory is outside the process's allocators,
    so no peak is reported; first-run time includes loading (and, for the first unit, compiling) the package."""

    def __init__(self, unit: str, packages: dict, work_dir: Path, log):
        self.unit, self.packages, self.work_dir, self.log = unit, packages, work_dir, log
        self.name, self.device, self.dtype = f"coreml:{unit}", unit, "fp16"
        self.component = None
        self.convert_s = None
        self.keep_packages = False

    def load(self, setup: Setup) -> None:
        self.setup = setup

    def prepare(self, x, tile) -> None:
        from ltx_ane.coreml import layout

        key = (self.setup.component, tuple(tile))
        if key not in self.packages:
            from ltx_ane.coreml.convert import CONVERTERS, ConvertOptions, TileShape
            from ltx_ane.models.loading import Source

            t0 = time.perf_counter()
            result = CONVERTERS[self.setup.component](
                Source(checkpoint=str(self.setup.checkpoint)), [TileShape.from_latent(*tile)],
                self.work_dir / "coreml", options=ConvertOptions(log=self.log))
            self.packages[key] = (result.path, time.perf_counter() - t0)
        self.package, self.convert_s = self.packages[key]
        c = self.setup.component
        self.x = (layout.latent_to_frames(x[0]) if c == "decoder" else layout.video_to_frames(x[0]) if c == "encoder"
                  else np.ascontiguousarray(x[0].transpose(1, 0, 2, 3)))
        self.core = None

    def run(self):
        if self.core is None:  # inside the first (timed) call: loading and compiling are part of first-run time
            from ltx_ane.coreml.runtime import CoreMLComponent

            self.core = CoreMLComponent(self.package, self.unit)
        return self.core.predict_numpy(self.x)

    def to_numpy(self, out) -> np.ndarray:
        from ltx_ane.coreml import layout

        out = np.asarray(out, dtype=np.float32)
        c = self.setup.component
        if c == "decoder":
            return layout.frames_to_video(out)[None]
        if c == "encoder":
            return layout.frames_to_latent(out)[None]
        return out.transpose(1, 0, 2, 3)[None]

    def extra(self) -> dict:
        info = {"convert_s": self.convert_s}
        if self.keep_packages:
            info["package"] = str(self.package)
        try:
            p = self.core.placement(self.core.function_for(self.x.shape))
            total = sum(sum(ops.values()) for ops in p.ops_by_device.values())
            info["placement"] = {
                "ane_op_share": sum(p.ops_by_device.get("ANE", {}).values()) / total if total else None,
                "ane_cost_share": p.cost_by_device.get("ANE"),
                "ops_by_device": {d: sum(ops.values()) for d, ops in p.ops_by_device.items()},
                "cost_by_device": p.cost_by_device,
            }
        except Exception as err:  # MLComputePlan needs macOS 14.4+; timing stands without it
            info["placement"] = {"error": _one_line(err)}
        return info

    def release(self) -> None:
        self.core = self.x = None
        gc.collect()


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def make_backend(name: str, s: Settings, torch_device: str, packages: dict, work_dir: Path) -> Backend:
    if name == "mlx":
        return MlxBackend(s.dtype, s.seed)
    if name == "torch":
        return TorchBackend(s.dtype, torch_device)
    backend = CoreMLBackend(name.split(":", 1)[1], packages, work_dir, s.log)
    backend.keep_packages = s.work_dir is not None  # a temporary work dir is removed at the end
    return backend


# ------------------------------------------------------------------------------------------- the run


def reference_output(setup: Setup, x: np.ndarray, torch_device: str, seed: int) -> np.ndarray:
    """The fp32 output every backend is compared with: ltx-core when installed, else MLX in fp32."""
    if setup.checkpoint is not None and reference_available():
        import torch

        model = reference_fp32(setup)
        # On the GPU only for this call, so it never counts in a backend's peak.
        model.to(torch_device)
        with torch.inference_mode():
            out = model(torch.from_numpy(x).to(torch_device)).float().cpu().numpy()
        del model
        gc.collect()
        if torch_device.startswith("cuda"):
            torch.cuda.empty_cache()
        return out
    import mlx.core as mx

    model = load_mlx(setup, "fp32", 0)
    out = np.array(model(mx.array(x)).astype(mx.float32))
    del model
    gc.collect()
    mx.clear_cache()
    return out


def base_row(component: str, tile, backend: str) -> dict:
    return {"component": component, "tile": list(tile), "backend": backend, "status": "ok", "reason": None}


def run_case(setup: Setup, tile, backends: list[Backend], s: Settings, torch_device: str, peaks: dict) -> list[dict]:
    x = make_input(setup, tile, s.seed)
    load_before = load()
    expected = reference_output(setup, x, torch_device, s.seed)
    n_flops = F.conv_flops(setup.component, setup.config, tile)
    rows, active = {}, []
    for b in backends:
        rows[b.name] = base_row(setup.component, tile, b.name)
        try:
            b.prepare(x, tile)
            active.append(b)
        except Exception as err:
            rows[b.name].update(status="failed", reason=_one_line(err))
            s.log(f"  {b.name}: failed to prepare: {rows[b.name]['reason']}")
            if s.log is not None and not isinstance(err, LtxAneError):
                s.log(traceback.format_exc(limit=3))
    times = {b.name: [] for b in active}
    first = {}
    peak = {b.name: None for b in active}
    outs = {}
    total = s.warmup + s.runs
    for i in range(total):
        for b in list(active):
            gc.collect()
            try:
                b.reset_peak()
                dt, out = timed_call(b.run, b.sync)
                if i == 0:
                    first[b.name] = dt
                if i >= s.warmup:
                    times[b.name].append(dt)
                    p = b.peak()
                    if p is not None:
                        peak[b.name] = max(peak[b.name] or 0, p)
                if i == total - 1:
                    outs[b.name] = b.to_numpy(out)
                del out
            except Exception as err:  # out of memory and the like: the row says so, the others go on
                rows[b.name].update(status="failed", reason=_one_line(err))
                s.log(f"  {b.name}: failed: {rows[b.name]['reason']}")
                active.remove(b)
    load_after = load()
    peaks_tbl = peaks
    for b in active:
        out = outs.pop(b.name)
        stats = summary(times[b.name])
        row = rows[b.name]
        row.update(stats)
        row.update({
            "device": b.device, "dtype": b.dtype, "first_run_s": first[b.name], "peak_bytes": peak[b.name],
            "input_shape": list(x.shape), "output_shape": list(out.shape),
            "frames": pixel_frames(setup, tile, out.shape),
            "reference": setup.reference, "weights": setup.weights,
            "noisy": (stats["max_s"] - stats["min_s"]) / stats["median_s"] > NOISY_SPREAD,
            "load_before": load_before, "load_after": load_after,
        })
        row["fps"] = row["frames"] / stats["median_s"]
        if out.shape == expected.shape:
            row["max_abs_err"] = max_abs_err(expected, out)
            row["psnr_db"] = psnr(expected, out)
            row["passed_parity"] = bool(np.isfinite(row["psnr_db"]) and row["psnr_db"] >= s.min_psnr)
        else:
            row.update(max_abs_err=None, psnr_db=None, passed_parity=False,
                       reason=f"output shape {list(out.shape)} != reference {list(expected.shape)}")
        row.update(roofline(n_flops, stats["median_s"], peaks_tbl))
        row.update(b.extra())
    for name, row in rows.items():
        if row["status"] == "ok":
            r = row
            err = f"{r['psnr_db']:.1f} dB" if r.get("psnr_db") is not None else "n/a"
            s.log(f"  {name}: median {r['median_s'] * 1e3:.1f} ms [{r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f}], "
                  f"first {r['first_run_s'] * 1e3:.1f} ms, PSNR {err}{'' if r['passed_parity'] else ' (FAILED parity)'}")
    return [rows[b.name] for b in backends]


def roofline(n_flops: int | None, median_s: float, peaks: dict) -> dict:
    ane_s = F.time_at_peak(n_flops, peaks.get("ane_tflops"))
    gpu_s = F.time_at_peak(n_flops, peaks.get("gpu_tflops"))
    return {
        "flops": n_flops,
        "achieved_tflops": n_flops / median_s / 1e12 if n_flops else None,
        "ane_peak_s": ane_s, "gpu_peak_s": gpu_s,
        "fraction_of_ane_peak": ane_s / median_s if ane_s else None,
        "fraction_of_gpu_peak": gpu_s / median_s if gpu_s else None,
    }


def run(s: Settings) -> dict:
    """Run the whole benchmark; returns the result document (see report.py for its use)."""
    if s.runs < 2:
        raise LtxAneError("--runs must be at least 2 (a median and a range, never one run)")
    if s.warmup < 1:
        raise LtxAneError("--warmup must be at least 1 (the first call is the first-run time, never a timed one)")
    load_start = load()
    machine = machine_info()
    torch_device = resolve_torch_device(s.torch_device)
    work = Path(s.work_dir) if s.work_dir else Path(tempfile.mkdtemp(prefix="ltx-ane-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    skipped = {b: unavailable_reason(b) for b in s.backends}
    runnable = [b for b in s.backends if skipped[b] is None]
    s.log(f"ltx-ane bench: {machine['chip']}, profile {s.device_profile.name}, backends "
          + ", ".join(b if skipped[b] is None else f"{b} (skipped: {skipped[b]})" for b in s.backends))
    if load_start["busy"]:
        s.log(f"warning: the machine is busy (load {load_start['load1']} on {load_start['cpus']} CPUs); timings will say so")
    try:
        rows, hybrid, started = _run_components(s, work, runnable, skipped, torch_device, machine)
    finally:
        if s.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    load_end = load()
    return _result(s, machine, load_start, load_end, started, torch_device, rows, hybrid)


def _run_components(s: Settings, work: Path, runnable, skipped, torch_device: str, machine: dict):
    rows, hybrid_rows = [], []
    packages: dict = {}
    started = time.time()
    for component in s.components:
        tiles = s.sizes.get(component) or s.device_profile.sizes[component]
        setup = make_setup(component, s, work)
        backends = []
        for name in runnable:
            b = make_backend(name, s, torch_device, packages, work)
            try:
                b.load(setup)
                backends.append(b)
            except Exception as err:
                for tile in tiles:
                    rows.append({**base_row(component, tile, name), "status": "failed", "reason": _one_line(err)})
                s.log(f"{component}: {name} failed to load: {_one_line(err)}")
        for tile in tiles:
            s.log(f"{component} {'x'.join(map(str, tile))} (latent): " + ", ".join(b.name for b in backends))
            case_rows = run_case(setup, tile, backends, s, torch_device, machine["peaks"])
            for name in s.backends:
                if skipped[name] is not None:
                    paper = roofline(F.conv_flops(component, setup.config, tile), 1.0, machine["peaks"])
                    rows.append({**base_row(component, tile, name), "status": "skipped", "reason": skipped[name],
                                 "flops": paper["flops"], "ane_peak_s": paper["ane_peak_s"],
                                 "gpu_peak_s": paper["gpu_peak_s"], "median_s": None})
            rows.extend(case_rows)
        for b in backends:
            b.release()
        gc.collect()
        if component == "decoder":
            hybrid = hybrid_throughput(s, setup, tiles[0], runnable, packages)
            if hybrid is not None:
                hybrid_rows.append(hybrid)
    return rows, hybrid_rows, started


def hybrid_throughput(s: Settings, setup: Setup, tile, runnable, packages: dict) -> dict | None:
    """Tiles per second of each decoder backend alone and of all of them pulling tiles together.

    The tiled run covers a few tiles of the benchmark's first decoder tile (so a Core ML package converted for
    it serves every tile); each rate is the median of ``s.runs`` passes after one warm-up pass.
    """
    from ltx_ane.runtime import backends as B
    from ltx_ane.runtime.scheduler import measure_throughput
    from ltx_ane.runtime.tiling import make_plan

    names = [n for n in runnable if n in ("mlx", "torch") or ("decoder", tuple(tile)) in packages]
    if len(names) < 2 or tile[1] < 3 or tile[2] < 3:
        return None
    import mlx.core as mx

    grid = (tile[0], 2 * tile[1] - 2, 3 * tile[2] - 4)
    plan = make_plan(grid, tile)
    model = load_mlx(setup, s.dtype, s.seed)
    package = packages.get(("decoder", tuple(tile)), (None,))[0]
    backends = B.build(B.Choice("decoder", names, "bench", str(package) if package else None), model)
    latent = mx.array(make_input(setup, grid, s.seed)).transpose(0, 2, 3, 4, 1).astype(model.dtype)
    passes = [measure_throughput(plan, latent, backends) for _ in range(s.runs + 1)][1:]
    median = lambda values: float(np.median(values))  # noqa: E731
    row = {
        "component": "decoder", "tile": list(tile), "backends": names,
        "grid": list(grid), "tiles": plan.num_tiles,
        "alone_tiles_per_s": {n: median([p["alone"][n] for p in passes]) for n in passes[0]["alone"]},
        "together_tiles_per_s": median([p["together"] for p in passes]),
        "together_tiles_by_backend": passes[-1]["together_by_backend"],
    }
    best_alone = max(row["alone_tiles_per_s"].values())
    row["together_over_best_alone"] = row["together_tiles_per_s"] / best_alone if best_alone else None
    s.log(f"decoder hybrid ({'+'.join(names)}, {plan.num_tiles} tiles): alone "
          + ", ".join(f"{n} {r:.2f}" for n, r in row["alone_tiles_per_s"].items())
          + f" tiles/s; together {row['together_tiles_per_s']:.2f} tiles/s")
    return row


def _result(s: Settings, machine, load_start, load_end, started, torch_device, rows, hybrid) -> dict:
    return {
        "format": 1,
        "command": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": time.time() - started,
        "machine": {**machine, "load_start": load_start, "load_end": load_end,
                    "busy": bool(load_start["busy"])},
        "versions": versions(),
        "settings": {
            "device_profile": s.device_profile.name, "device_profile_description": s.device_profile.description,
            "reduced_widths": {"vae": s.device_profile.vae_widths, "upscalers": s.device_profile.upscaler_widths}
            if (s.device_profile.vae_widths or s.device_profile.upscaler_widths) else None,
            "components": list(s.components), "backends": list(s.backends), "dtype": s.dtype, "runs": s.runs,
            "warmup": s.warmup, "min_psnr_db": s.min_psnr, "torch_device": torch_device,
            "mlx_device": _mlx_device(), "seed": s.seed,
        },
        "rows": rows,
        "hybrid": hybrid,
    }


def _mlx_device() -> str | None:
    if not _has("mlx"):
        return None
    import mlx.core as mx

    return str(mx.default_device())
