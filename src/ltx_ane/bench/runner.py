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
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_ane.bench import flops as F
from ltx_ane.bench.machine import load, machine_info, versions
from ltx_ane.bench.settings import NOISY_SPREAD, Settings, resolve_torch_device, unavailable_reason
from ltx_ane.bench.timing import max_abs_err, psnr, summary, timed_call
from ltx_ane.errors import LtxAneError
from ltx_ane.models import registry
from ltx_ane.models.loading import Source
from ltx_ane.runtime import backends as B
from ltx_ane.runtime.choice import Choice, reference_available
from ltx_ane.runtime.precision import fp32_record


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
    def spec(self):
        return registry.spec(self.component)

    def source(self) -> Source:
        if self.checkpoint is None:  # no file to share (ltx-core missing): MLX's seeded random weights
            return Source(config=self.config, random_weights=True)
        return Source(checkpoint=str(self.checkpoint))


def _vae_tensors(module, component: str) -> dict:
    from ltx_ane.reference import video_vae as RV

    return RV.vae_state_dict(**{component: module})


def _upscaler_tensors(module, component: str) -> dict:
    from ltx_ane.reference import upscaler as RU

    return RU.upscaler_state_dict(module)


# Per model family: the device preset's width overrides, the config section they apply to, and how its
# checkpoint files name a module's tensors (the real format, unused statistics included).
FAMILIES = {
    "video_vae": ("vae_widths", "vae", _vae_tensors),
    "upscaler": ("upscaler_widths", None, _upscaler_tensors),
}


def make_setup(component: str, s: Settings, tmp: Path) -> Setup:
    spec = registry.spec(component)
    widths_attr, section, tensors = FAMILIES[spec.family]
    config_file = s.config if spec.family == "video_vae" else None  # --config is the VAE's
    given = None if s.random_weights else (s.vae if spec.family == "video_vae" else getattr(s, component))
    if given:
        raw, path = spec.resolve(Source(checkpoint=given, config_file=config_file))
        return Setup(component, raw, path, f"checkpoint {path}")
    raw, _ = spec.resolve(Source(config_file=config_file, random_weights=True))
    overridden = getattr(s.device_profile, widths_attr)
    if overridden:
        raw = copy.deepcopy(raw)
        (raw[section] if section else raw).update(overridden)
    desc = "random weights, " + (f"reduced widths {overridden}" if overridden else "real architecture")
    if not reference_available():
        return Setup(component, raw, None, desc, reference="MLX fp32 (ltx-core not installed)")
    from ltx_ane import reference as R

    # ltx-core's random weights, written in the real format: every backend then loads the same file.
    path = tmp / f"{component}.safetensors"
    module = spec.reference(raw, s.seed)
    R.write_checkpoint(path, tensors(module, component), raw)
    del module
    return Setup(component, raw, path, desc)


def make_input(setup: Setup, tile, seed: int) -> np.ndarray:
    """One call's input in ltx-core's (B, C, F, H, W) layout: latents ~ N(0, 1), video in [-1, 1]."""
    shape = setup.spec.input_shape(setup.config, tile)
    rng = np.random.default_rng(seed)
    if setup.spec.io == "encode":
        return rng.uniform(-1, 1, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def pixel_frames(setup: Setup, tile, output_shape) -> int:
    """Video frames one call covers: what the decoder makes, the encoder reads, an upscaler's latent stands for."""
    io = setup.spec.io
    if io == "decode":
        return int(output_shape[2])
    cfg = setup.spec.config(setup.config)
    f = output_shape[2] if io == "upsample" and cfg.temporal_upsample else tile[0]
    return (int(f) - 1) * 8 + 1


# The backends' calling convention against ltx-core's layout: the VAE's host arrays are channels-last.
HOST_AXES = {"decode": (0, 2, 3, 4, 1), "encode": (0, 2, 3, 4, 1), "upsample": None}


def to_host_layout(setup: Setup, x: np.ndarray) -> np.ndarray:
    axes = HOST_AXES[setup.spec.io]
    return np.ascontiguousarray(x.transpose(axes)) if axes else x


def from_host_layout(setup: Setup, y: np.ndarray) -> np.ndarray:
    axes = HOST_AXES[setup.spec.io]
    return np.ascontiguousarray(y.transpose(np.argsort(axes))) if axes else y


def identity_statistics(setup: Setup):
    """The upscalers time as bare modules: statistics that change nothing (ltx-core's output is the reference)."""
    from ltx_ane.models.upscaler.upsample import LatentStatistics

    c = setup.spec.config(setup.config).in_channels
    return LatentStatistics(mean=np.zeros(c, np.float32), std=np.ones(c, np.float32))


# ------------------------------------------------------------------------------------------- backends


def load_backend(name: str, setup: Setup, s: Settings, torch_device: str) -> B.Backend:
    """The runtime's own backend object for a whole-model backend (MLX, torch); Core ML is per tile."""
    stats = identity_statistics(setup) if setup.spec.io == "upsample" else None
    if name == "mlx":
        return B.MLXBackend(setup.spec.load(setup.source(), s.dtype, s.seed), setup.component, stats)
    from ltx_ane import reference as R

    return B.TorchBackend(R.from_checkpoint(setup.component, setup.checkpoint, setup.config), setup.component,
                          stats, torch_device, s.dtype)


def measured_identity(setup: Setup, s: Settings, loaded: dict) -> dict:
    """The config, weights and dtype every row of a component is measured with, which a profile entry records so
    that ``--backend auto`` uses it only for a run of the same (``runtime.profile``)."""
    mlx = loaded.get("mlx")
    model = mlx.model if mlx is not None else setup.spec.load(setup.source(), s.dtype, s.seed)
    return B.run_identity(model)


def coreml_backend(name: str, setup: Setup, tile, s: Settings, packages: dict, work_dir: Path) -> B.Backend:
    """A Core ML backend for one tile: converted once per (component, tile), loaded per compute unit (compiling
    on its first call, which is then part of the first-run time)."""
    from ltx_ane.coreml.convert import ConvertOptions, TileShape, convert
    from ltx_ane.coreml.runtime import CoreMLComponent
    from ltx_ane.runtime.coreml_backend import CoreMLBackend

    key = (setup.component, tuple(tile))
    if key not in packages:
        t0 = time.perf_counter()
        result = convert(setup.component, setup.source(), [TileShape.from_latent(*tile)], work_dir / "coreml",
                         options=ConvertOptions(log=s.log))
        packages[key] = (result.path, time.perf_counter() - t0)
    package, convert_s = packages[key]
    stats = identity_statistics(setup) if setup.spec.io == "upsample" else None
    backend = CoreMLBackend(CoreMLComponent(package, name.split(":", 1)[1]), setup.component, stats)
    backend.bench_info = {"convert_s": convert_s}
    if s.work_dir is not None:  # a temporary work dir is removed at the end
        backend.bench_info["package"] = str(package)
    return backend


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# ------------------------------------------------------------------------------------------- the run


def reference_output(setup: Setup, x: np.ndarray, torch_device: str) -> np.ndarray:
    """The fp32 output every backend is compared with: ltx-core when installed, else MLX in fp32."""
    if setup.checkpoint is not None and reference_available():
        import torch

        from ltx_ane import reference as R
        from ltx_ane.runtime.precision import full_fp32_torch

        full_fp32_torch()

        model = R.from_checkpoint(setup.component, setup.checkpoint, setup.config)
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

    model = setup.spec.load(setup.source(), "fp32", 0)
    out = np.array(model(mx.array(x)).astype(mx.float32))
    del model
    gc.collect()
    mx.clear_cache()
    return out


def base_row(component: str, tile, backend: str) -> dict:
    return {"component": component, "tile": list(tile), "backend": backend, "status": "ok", "reason": None}


def run_case(setup: Setup, tile, names: list[str], loaded: dict, s: Settings, torch_device: str, peaks: dict,
             packages: dict, work_dir: Path) -> list[dict]:
    x = make_input(setup, tile, s.seed)
    host_x = to_host_layout(setup, x)
    load_before = load()
    expected = reference_output(setup, x, torch_device)
    n_flops = F.conv_flops(setup.component, setup.config, tile)
    rows, active, prepared = {}, [], {}
    for name in names:
        rows[name] = base_row(setup.component, tile, name)
        try:
            b = loaded[name] if name in loaded else coreml_backend(name, setup, tile, s, packages, work_dir)
            prepared[name] = b.prepare(host_x)
            active.append((name, b))
        except Exception as err:
            rows[name].update(status="failed", reason=_one_line(err))
            s.log(f"  {name}: failed to prepare: {rows[name]['reason']}")
            if not isinstance(err, LtxAneError):
                s.log(traceback.format_exc(limit=3))
    times = {name: [] for name, _ in active}
    first, outs = {}, {}
    peak = {name: None for name, _ in active}
    total = s.warmup + s.runs
    for i in range(total):
        for name, b in list(active):
            gc.collect()
            try:
                b.reset_peak()
                dt, out = timed_call(lambda: b.run(prepared[name]), b.sync)
                if i == 0:
                    first[name] = dt
                if i >= s.warmup:
                    times[name].append(dt)
                    p = b.peak()
                    if p is not None:
                        peak[name] = max(peak[name] or 0, p)
                if i == total - 1:
                    outs[name] = from_host_layout(setup, b.to_host(out))
                del out
            except Exception as err:  # out of memory and the like: the row says so, the others go on
                rows[name].update(status="failed", reason=_one_line(err))
                s.log(f"  {name}: failed: {rows[name]['reason']}")
                active.remove((name, b))
    load_after = load()
    for name, b in active:
        out = outs.pop(name)
        stats = summary(times[name])
        row = rows[name]
        row.update(stats)
        row.update({
            "device": b.device, "dtype": b.dtype, "first_run_s": first[name], "peak_bytes": peak[name],
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
        row.update(roofline(n_flops, stats["median_s"], peaks))
        row.update(getattr(b, "bench_info", {}))
        row.update(b.extra())
        if name not in loaded:  # a per-tile Core ML backend
            b.release()
    for name, row in rows.items():
        if row["status"] == "ok":
            r = row
            err = f"{r['psnr_db']:.1f} dB" if r.get("psnr_db") is not None else "n/a"
            s.log(f"  {name}: median {r['median_s'] * 1e3:.1f} ms [{r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f}], "
                  f"first {r['first_run_s'] * 1e3:.1f} ms, PSNR {err}{'' if r['passed_parity'] else ' (FAILED parity)'}")
    return [rows[name] for name in names]


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
    from ltx_ane.runtime.precision import full_fp32_mlx

    full_fp32_mlx()  # the references are fp32 (in effect when nothing ran MLX in float32 before, as in `ltx-ane bench`)
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
        rows, hybrid, started, skipped_for_time = _run_components(s, work, runnable, skipped, torch_device, machine)
    finally:
        if s.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    load_end = load()
    result = _result(s, machine, load_start, load_end, started, torch_device, rows, hybrid)
    result["skipped_for_time"] = skipped_for_time
    return result


def section_budget(s: Settings) -> float:
    return s.section_budget_s if s.section_budget_s is not None else s.device_profile.section_budget_s


def _run_components(s: Settings, work: Path, runnable, skipped, torch_device: str, machine: dict):
    rows, hybrid_rows = [], []
    packages: dict = {}
    started = time.time()
    budget = section_budget(s)
    skipped_for_time: list[str] = []  # one line per section that stopped early
    for component in s.components:
        section_start = time.perf_counter()
        tiles = s.sizes.get(component) or s.device_profile.sizes[component]
        setup = make_setup(component, s, work)
        loaded = {}
        for name in runnable:
            if name.startswith("coreml:"):
                continue
            try:
                loaded[name] = load_backend(name, setup, s, torch_device)
            except Exception as err:
                for tile in tiles:
                    rows.append({**base_row(component, tile, name), "status": "failed", "reason": _one_line(err)})
                s.log(f"{component}: {name} failed to load: {_one_line(err)}")
        names = [n for n in runnable if n in loaded or n.startswith("coreml:")]
        measured_with = measured_identity(setup, s, loaded)
        for i, tile in enumerate(tiles):
            used = time.perf_counter() - section_start
            if i > 0 and used > budget:
                reason = f"time budget: the {component} section had used {used:.0f} s of its {budget:g} s"
                for t in tiles[i:]:
                    rows.extend({**base_row(component, t, name), "status": "skipped", "reason": reason, "median_s": None}
                                for name in s.backends)
                skipped_for_time.append(f"{component} tiles {', '.join('x'.join(map(str, t)) for t in tiles[i:])}: {reason}")
                s.log(f"{component}: skipped {len(tiles) - i} tile(s): {reason}")
                break
            s.log(f"{component} {'x'.join(map(str, tile))} (latent): " + ", ".join(names))
            case_rows = run_case(setup, tile, names, loaded, s, torch_device, machine["peaks"], packages, work)
            for name in s.backends:
                if skipped[name] is not None:
                    paper = roofline(F.conv_flops(component, setup.config, tile), 1.0, machine["peaks"])
                    rows.append({**base_row(component, tile, name), "status": "skipped", "reason": skipped[name],
                                 "flops": paper["flops"], "ane_peak_s": paper["ane_peak_s"],
                                 "gpu_peak_s": paper["gpu_peak_s"], "median_s": None})
            rows.extend({**row, "measured_with": measured_with} for row in case_rows)
        for b in loaded.values():
            b.release()
        gc.collect()
        if setup.spec.io == "decode":
            hybrid = hybrid_throughput(s, setup, tiles[0], runnable, packages, torch_device, budget)
            if hybrid is not None:
                hybrid_rows.append(hybrid)
                if hybrid["passes"] < s.runs:
                    skipped_for_time.append(f"backends together: {hybrid['passes']} of {s.runs} timed passes "
                                            f"(time budget {budget:g} s)")
    return rows, hybrid_rows, started, skipped_for_time


def hybrid_throughput(s: Settings, setup: Setup, tile, runnable, packages: dict, torch_device: str,
                      budget_s: float = float("inf")) -> dict | None:
    """Tiles per second of each decoder backend alone and of all of them pulling tiles together.

    The tiled run covers a few tiles of the benchmark's first decoder tile (so a Core ML package converted for
    it serves every tile); each rate is the median of ``s.runs`` passes after one warm-up pass, or of as many as
    ``budget_s`` allows (at least one; ``passes`` says how many). The backends are the pipeline's own, torch on the
    benchmark's device and dtype.
    """
    from ltx_ane.runtime.scheduler import measure_throughput
    from ltx_ane.runtime.tiling import make_plan

    names = [n for n in runnable if n in ("mlx", "torch") or (setup.component, tuple(tile)) in packages]
    if len(names) < 2 or tile[1] < 3 or tile[2] < 3:
        return None
    import mlx.core as mx

    grid = (tile[0], 2 * tile[1] - 2, 3 * tile[2] - 4)
    plan = make_plan(grid, tile)
    model = setup.spec.load(setup.source(), s.dtype, s.seed)
    package = packages.get((setup.component, tuple(tile)), (None,))[0]
    choice = Choice(setup.component, names, "bench", str(package) if package else None)
    backends = B.build(choice, model, torch_device=torch_device, torch_dtype=s.dtype)
    latent = mx.array(make_input(setup, grid, s.seed)).transpose(0, 2, 3, 4, 1).astype(model.dtype)
    start = time.perf_counter()
    measure_throughput(plan, latent, backends)  # warm-up
    passes = []
    while len(passes) < s.runs and (not passes or time.perf_counter() - start < budget_s):
        passes.append(measure_throughput(plan, latent, backends))
    for b in backends:
        b.release()
    median = lambda values: float(np.median(values))  # noqa: E731
    row = {
        "component": setup.component, "tile": list(tile), "backends": names,
        "grid": list(grid), "tiles": plan.num_tiles, "passes": len(passes),
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
                    "busy": bool(load_start["busy"]), "fp32": fp32_record()},
        "versions": versions(),
        "settings": {
            "device_profile": s.device_profile.name, "device_profile_description": s.device_profile.description,
            "reduced_widths": {"vae": s.device_profile.vae_widths, "upscalers": s.device_profile.upscaler_widths}
            if (s.device_profile.vae_widths or s.device_profile.upscaler_widths) else None,
            "components": list(s.components), "backends": list(s.backends), "dtype": s.dtype, "runs": s.runs,
            "warmup": s.warmup, "min_psnr_db": s.min_psnr, "torch_device": torch_device,
            "mlx_device": _mlx_device(), "seed": s.seed, "section_budget_s": section_budget(s),
        },
        "rows": rows,
        "hybrid": hybrid,
    }


def _mlx_device() -> str | None:
    if unavailable_reason("mlx") is not None:
        return None
    import mlx.core as mx

    return str(mx.default_device())
