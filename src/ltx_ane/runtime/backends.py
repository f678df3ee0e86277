"""One interface for every component on every backend, and the rule that picks a backend per component.

A backend runs one component (``decoder``, ``encoder``, ``spatial``, ``temporal``) on host (NumPy float32) arrays,
so several backends can run side by side on their own threads without sharing framework state:

- decoder: (B, F, h, w, C) normalized latent tile -> (B, 8(F-1)+1, 32h, 32w, 3) pixels in [-1, 1];
- encoder: (B, F, H, W, 3) pixels -> (B, f, h, w, C) normalized latent;
- spatial / temporal: the two-stage step on a whole (B, C, F, h, w) normalized latent (un-normalize, upscaler,
  normalize), since the upscalers' GroupNorm spans every frame and cannot be tiled.

Backends are named ``mlx``, ``torch`` (the ltx-core reference) and ``coreml:<compute unit>``. ``auto`` reads the
bench profile that ``ltx_ane.bench.profile`` writes (JSON, default ``~/.cache/ltx-ane/profile.json``, or
``$LTX_ANE_CACHE/profile.json``, or ``--profile FILE``)::

    {"entries": [
        {"component": "decoder", "tile": [9, 16, 16], "backend": "coreml:CPU_AND_NE",
         "passed_parity": true, "median_s": 1.9, "package": "/path/decoder.mlpackage"},
        {"component": "decoder", "tile": [9, 16, 16], "backend": "mlx,coreml:CPU_AND_NE",
         "passed_parity": true, "median_s": 1.2}
    ]}

``tile`` is one call's latent tile (frames, h, w): the decoder's input, the encoder's output, the upscalers' whole
input grid; null means any shape. Read here beyond the bench's own fields: ``backend`` may list several backends
separated by commas (a tiled component then runs them together, each pulling the next tile); ``package`` says where
a Core ML entry's package is (``--package`` overrides); ``seconds`` is accepted for ``median_s``. Other keys are
ignored. Among matching entries, the fastest that passed parity wins. Without a profile, or off macOS, ``auto`` is
MLX. A Core ML model whose parity gate failed (in the profile, or in its package's fp16 PSNR) is never used.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ltx_ane.errors import LtxAneError

COMPONENTS = ("decoder", "encoder", "spatial", "temporal")
TILED = ("decoder", "encoder")
KINDS = ("mlx", "torch", "coreml")
DEFAULT_COMPUTE_UNIT = "CPU_AND_NE"

# MLX's evaluation state is not documented as thread-safe (and Metal command queues are per stream), so every
# MLX call in a run with worker threads goes through this one lock; other backends never need it.
MLX_LOCK = threading.RLock()


# ------------------------------------------------------------------------------------------------ names


def canonical(name: str) -> str:
    """'mlx', 'torch', 'coreml' (-> coreml:CPU_AND_NE) or 'coreml:UNIT', checked."""
    from ltx_ane.coreml.runtime import COMPUTE_UNITS

    text = name.strip()
    kind, _, unit = text.partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise LtxAneError(f"unknown backend {text!r} (choose from auto, mlx, torch, coreml[:{'|'.join(COMPUTE_UNITS)}])")
    if kind != "coreml":
        if unit:
            raise LtxAneError(f"backend {text!r}: only coreml takes a compute unit")
        return kind
    unit = (unit or DEFAULT_COMPUTE_UNIT).upper()
    if unit not in COMPUTE_UNITS:
        raise LtxAneError(f"unknown Core ML compute unit {unit!r} in {text!r} (choose from {', '.join(COMPUTE_UNITS)})")
    return f"coreml:{unit}"


def parse_spec(text: str) -> list[str]:
    """A --backend value: 'auto', or one or more backend names separated by commas (no repeats)."""
    parts = [p for p in (text or "").split(",")]
    if any(not p.strip() for p in parts):
        raise LtxAneError(f"empty backend name in {text!r}")
    if [p.strip().lower() for p in parts] == ["auto"]:
        return ["auto"]
    if any(p.strip().lower() == "auto" for p in parts):
        raise LtxAneError(f"'auto' cannot be combined with other backends ({text!r})")
    names = [canonical(p) for p in parts]
    if len(set(names)) != len(names):
        raise LtxAneError(f"backend listed twice in {text!r}")
    return names


# ------------------------------------------------------------------------------------------------ profile


def default_profile_path() -> Path:
    return Path(os.environ.get("LTX_ANE_CACHE", "~/.cache/ltx-ane")).expanduser() / "profile.json"


@dataclass(frozen=True)
class ProfileEntry:
    component: str
    tile: tuple[int, int, int] | None
    backends: tuple[str, ...]
    passed_parity: bool
    seconds: float | None = None
    package: str | None = None

    @property
    def backend(self) -> str:
        return ",".join(self.backends)


@dataclass
class Profile:
    path: Path
    entries: list[ProfileEntry] = field(default_factory=list)

    def matching(self, component: str, tile) -> list[ProfileEntry]:
        tile = tuple(tile) if tile is not None else None
        return [e for e in self.entries if e.component == component and (e.tile is None or e.tile == tile)]

    def choose(self, component: str, tile) -> ProfileEntry | None:
        """The fastest matching entry that passed parity (exact tile before a tile-less entry on a tie)."""
        passed = [e for e in self.matching(component, tile) if e.passed_parity]
        if not passed:
            return None
        return min(passed, key=lambda e: (e.seconds if e.seconds is not None else float("inf"), e.tile is None))

    def failed(self, component: str, tile, backend: str) -> bool:
        """Whether the profile records ``backend`` failing its parity gate for this component and tile."""
        return any(not e.passed_parity and backend in e.backends for e in self.matching(component, tile))


def load_profile(path: str | Path | None = None) -> Profile | None:
    """The profile at ``path`` (must exist) or at the default location (None when absent)."""
    explicit = path is not None
    path = Path(path).expanduser() if explicit else default_profile_path()
    if not path.exists():
        if explicit:
            raise LtxAneError(f"profile {path} does not exist")
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LtxAneError(f"cannot read profile {path}: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise LtxAneError(f"profile {path}: expected a JSON object with a list under 'entries'")
    entries = []
    for i, e in enumerate(raw["entries"]):
        where = f"profile {path}, entry {i}"
        if not isinstance(e, dict):
            raise LtxAneError(f"{where}: not an object")
        component = e.get("component")
        if component not in COMPONENTS:
            raise LtxAneError(f"{where}: component {component!r} is not one of {', '.join(COMPONENTS)}")
        tile = e.get("tile")
        if tile is not None:
            if not (isinstance(tile, list) and len(tile) == 3 and all(isinstance(v, int) and v > 0 for v in tile)):
                raise LtxAneError(f"{where}: tile must be [frames, h, w] in latents or null, got {tile!r}")
            tile = tuple(tile)
        if not isinstance(e.get("backend"), str):
            raise LtxAneError(f"{where}: 'backend' must be a string such as 'mlx' or 'coreml:CPU_AND_NE'")
        try:
            backends = parse_spec(e["backend"])
        except LtxAneError as err:
            raise LtxAneError(f"{where}: {err}") from None
        if backends == ["auto"]:
            raise LtxAneError(f"{where}: 'auto' is not a measured backend")
        seconds = e.get("median_s", e.get("seconds"))
        if seconds is not None and not isinstance(seconds, (int, float)):
            raise LtxAneError(f"{where}: 'median_s' must be a number")
        entries.append(ProfileEntry(component, tile, tuple(backends), e.get("passed_parity") is True,
                                    None if seconds is None else float(seconds), e.get("package")))
    return Profile(path, entries)


# ------------------------------------------------------------------------------------------------ choice


@dataclass
class Choice:
    """Which backends one component runs on, and why (printed for the user)."""

    component: str
    names: list[str]
    reason: str
    package: str | None = None

    def describe(self) -> str:
        return f"{self.component}: {' + '.join(self.names)} ({self.reason})"


def choose(
    component: str,
    spec: str,
    tile=None,
    profile: Profile | None = None,
    package: str | None = None,
    platform: str | None = None,
    profile_path: str | Path | None = None,
) -> Choice:
    """Resolve a --backend value for one component without loading anything.

    Explicit choices that cannot work (Core ML off macOS or without a package, a backend recorded as failing
    parity, several backends for an untiled component) are errors; ``auto`` falls back to MLX and says why.
    """
    if component not in COMPONENTS:
        raise ValueError(component)
    platform = platform or sys.platform
    names = parse_spec(spec)
    if names != ["auto"]:
        if len(names) > 1 and component not in TILED:
            raise LtxAneError(f"the {component} upscaler runs on a whole clip, so it takes one backend, not {spec!r}")
        for name in names:
            if profile is not None and profile.failed(component, tile, name):
                raise LtxAneError(f"{name} failed its parity gate for the {component} in {profile.path}; not using it")
            if name.startswith("coreml"):
                if platform != "darwin":
                    raise LtxAneError(f"--backend {name} for the {component}: Core ML runs only on macOS "
                                      f"(this is {platform}); use mlx or auto")
                if not package:
                    raise LtxAneError(f"--backend {name} for the {component} needs its Core ML package: --package FILE")
        return Choice(component, names, "as asked", package)

    where = profile.path if profile is not None else (profile_path or default_profile_path())
    if profile is None:
        return Choice(component, ["mlx"], f"auto: no profile at {where}")
    entry = profile.choose(component, tile)
    tile_text = "x".join(map(str, tile)) if tile is not None else "any tile"
    if entry is None:
        failed = [e.backend for e in profile.matching(component, tile) if not e.passed_parity]
        why = f"failed parity: {', '.join(failed)}" if failed else "no entry"
        return Choice(component, ["mlx"], f"auto: profile has no passing backend for {tile_text} ({why})")
    names, dropped = [], []
    pkg = package or entry.package
    for name in entry.backends:
        if name.startswith("coreml") and platform != "darwin":
            dropped.append(f"{name}: not macOS")
        elif name.startswith("coreml") and not pkg:
            dropped.append(f"{name}: no package")
        elif name == "torch" and not _have_reference():
            dropped.append("torch: ltx-core not installed")
        else:
            names.append(name)
    if len(names) > 1 and component not in TILED:
        names = names[:1]
    if not names:
        return Choice(component, ["mlx"], f"auto: profile picks {entry.backend} for {tile_text}, "
                      f"unusable here ({'; '.join(dropped)})")
    reason = f"auto: fastest passing in profile for {tile_text}"
    if dropped:
        reason += f"; dropped {'; '.join(dropped)}"
    return Choice(component, names, reason, pkg)


def _have_reference() -> bool:
    try:
        import ltx_core  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ backends


class Backend:
    """A component on one backend. ``__call__`` takes and returns host float32 arrays (see the module doc)."""

    name = "?"
    # Fixed-shape backends (Core ML) need the tiler's tile exactly as converted, so no balancing.
    any_shape = True

    def __init__(self, component: str):
        if component not in COMPONENTS:
            raise ValueError(component)
        self.component = component

    def supports(self, shape) -> bool:
        return True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.component}>"


def _stats_arrays(stats, channel_axis: int, ndim: int = 5):
    shape = [1] * ndim
    shape[channel_axis] = -1
    return stats.mean.reshape(shape).astype(np.float32), stats.std.reshape(shape).astype(np.float32)


class MLXBackend(Backend):
    name = "mlx"
    uses_mlx = True

    def __init__(self, model, component: str, stats=None):
        super().__init__(component)
        self.model, self.stats = model, stats

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import mlx.core as mx

        with MLX_LOCK:
            if self.component in TILED:
                inp = mx.array(np.ascontiguousarray(x, dtype=np.float32)).astype(self.model.dtype)
                run = self.model.decode_channels_last if self.component == "decoder" else self.model.encode_channels_last
                out = run(inp).astype(mx.float32)
                mx.eval(out)
                return np.array(out)
            from ltx_ane.pipelines.upsample import upsample_latent

            return upsample_latent(np.ascontiguousarray(x, dtype=np.float32), self.model, self.stats)


class TorchBackend(Backend):
    """The ltx-core reference in float32 on the CPU (or ``device``)."""

    name = "torch"
    uses_mlx = False

    def __init__(self, module, component: str, stats=None, device: str = "cpu"):
        super().__init__(component)
        self.module, self.stats, self.device = module.to(device).eval(), stats, device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        x = np.ascontiguousarray(x, dtype=np.float32)
        with torch.no_grad():
            if self.component in TILED:
                t = torch.from_numpy(x).permute(0, 4, 1, 2, 3).to(self.device)
                return self.module(t).permute(0, 2, 3, 4, 1).float().cpu().numpy()
            mean, std = _stats_arrays(self.stats, 1)
            t = torch.from_numpy(x * std + mean).to(self.device)
            y = self.module(t).float().cpu().numpy()
            return (y - mean) / std


class CoreMLBackend(Backend):
    """A converted package through ``coreml.runtime.CoreMLComponent`` (or anything with its ``predict_numpy``,
    ``function_for`` and ``metadata``), with the host-side layout changes around it."""

    uses_mlx = False
    any_shape = False

    def __init__(self, runner, component: str, stats=None, min_psnr: float | None = None):
        super().__init__(component)
        from ltx_ane.coreml.convert import DEFAULT_MIN_PSNR, META_PREFIX

        meta = getattr(runner, "metadata", {}) or {}
        got = meta.get(META_PREFIX + "component")
        if got and got != component:
            raise LtxAneError(f"Core ML package holds the {got}, not the {component}")
        bar = DEFAULT_MIN_PSNR if min_psnr is None else min_psnr
        measured = meta.get(META_PREFIX + "fp16_psnr_db")
        if measured and float(measured) < bar:
            raise LtxAneError(f"the Core ML {component} failed its parity gate ({float(measured):.1f} dB fp16 PSNR, "
                              f"bar {bar:g} dB); not using it")
        self.runner, self.stats = runner, stats
        self.name = f"coreml:{getattr(runner, 'compute_units', DEFAULT_COMPUTE_UNIT)}"

    def _program_shape(self, shape) -> tuple:
        if self.component == "decoder":
            _, f, h, w, c = shape
            return (f, c, h, w)
        if self.component == "encoder":
            _, f, h, w, c = shape
            return (f, c * 16, h // 4, w // 4)
        _, c, f, h, w = shape
        return (f, c, h, w)

    def supports(self, shape) -> bool:
        try:
            self.runner.function_for(self._program_shape(shape))
        except LtxAneError:
            return False
        return True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from ltx_ane.coreml import layout

        x = np.asarray(x, dtype=np.float32)
        outs = []
        for item in x:  # the programs have no batch axis: frames sit there
            if self.component == "decoder":
                y = self.runner.predict_numpy(layout.latent_to_frames(item.transpose(3, 0, 1, 2)))
                outs.append(layout.frames_to_video(np.asarray(y, np.float32)).transpose(1, 2, 3, 0))
            elif self.component == "encoder":
                y = self.runner.predict_numpy(layout.video_to_frames(item.transpose(3, 0, 1, 2)))
                outs.append(np.asarray(y, np.float32).transpose(0, 2, 3, 1))
            else:
                mean, std = _stats_arrays(self.stats, 0, 4)
                y = self.runner.predict_numpy(layout.latent_to_frames(item * std + mean))
                outs.append((layout.frames_to_latent(np.asarray(y, np.float32)) - mean) / std)
        return np.ascontiguousarray(np.stack(outs))


def torch_from_mlx(model, component: str):
    """The ltx-core module holding exactly an MLX model's weights (float32), whatever they were loaded from,
    so a reference backend never disagrees with the MLX one about weights (e.g. under --random-weights)."""
    import torch
    from mlx.utils import tree_flatten

    from ltx_ane import reference as R

    build = {"decoder": R.build_decoder, "encoder": R.build_encoder}.get(component, R.build_upscaler)
    module = build(model.config.raw)
    with MLX_LOCK:
        import mlx.core as mx

        params = {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(model.parameters())}
    state = {}
    for name, value in params.items():
        if value.ndim == 5:
            value = value.transpose(0, 4, 1, 2, 3)
        elif value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        state[name] = torch.from_numpy(np.ascontiguousarray(value))
    own = module.state_dict()
    missing = [k for k in own if k not in state and k.split(".")[-1] not in R.UNUSED_STATISTICS
               and not k.endswith("blur_down.kernel")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise LtxAneError(f"cannot copy the MLX {component} into ltx-core: missing {missing[:4]}, unexpected {unexpected[:4]}")
    module.load_state_dict(state, strict=False)
    return module.float().eval()


def build(choice: Choice, model, stats=None, runner_factory: Callable | None = None) -> list[Backend]:
    """Backends for a choice. ``model`` is the MLX component (weights come from it for torch); ``runner_factory``
    makes a Core ML runner from (package, compute unit), by default ``coreml.runtime.CoreMLComponent``."""
    out = []
    for name in choice.names:
        if name == "mlx":
            out.append(MLXBackend(model, choice.component, stats))
        elif name == "torch":
            from ltx_ane.reference import require_reference

            require_reference()
            out.append(TorchBackend(torch_from_mlx(model, choice.component), choice.component, stats))
        else:
            if runner_factory is None:
                from ltx_ane.coreml.runtime import CoreMLComponent as runner_factory
            unit = name.split(":", 1)[1]
            out.append(CoreMLBackend(runner_factory(choice.package, unit), choice.component, stats))
    return out


def keep_supported(backends: list[Backend], shape, log=None) -> list[Backend]:
    """Drop backends that cannot take this input shape (a Core ML package without that tile); never all."""
    kept = [b for b in backends if b.supports(shape)]
    for b in backends:
        if b not in kept and log:
            log(f"note: {b.name} has no function for input {tuple(shape)}; not using it for the {b.component}")
    if not kept:
        raise LtxAneError(f"no chosen backend takes input shape {tuple(shape)} for the {backends[0].component}; "
                          "convert the package with that tile or choose mlx")
    return kept
