"""One interface for every component on every backend, and the backends the pipelines and the bench run.

A backend runs one component on host (NumPy float32) arrays in its registry spec's calling convention
(``models.registry``: ``decode``, ``encode``, ``upsample``), so several backends can run side by side on their own
threads without sharing framework state, and the bench times exactly the objects the pipelines run. A call is
three steps, which the bench times apart: ``prepare`` (host array -> the backend's device input), ``run`` (the
component, synchronised by ``sync``) and ``to_host``; ``reset_peak``/``peak`` measure device memory and
``release`` lets the weights go.

``build`` makes the backends of a ``runtime.choice.Choice`` (which names them and says why); the Core ML backend
and its gates are in ``runtime.coreml_backend``.
"""

from __future__ import annotations

import gc
import threading
from typing import Callable

import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.models import registry
from ltx_ane.runtime.choice import Choice

# MLX's evaluation state is not documented as thread-safe (and Metal command queues are per stream), so every
# MLX call in a run with worker threads goes through this one lock; other backends never need it.
MLX_LOCK = threading.RLock()


def torch_accelerator() -> str:
    """The torch device the reference backend runs on: CUDA, else Apple's MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# ------------------------------------------------------------------------------------------------ backends


class Backend:
    """A component on one backend. ``__call__`` takes and returns host float32 arrays in the component's calling
    convention (``models.registry``); ``prepare``/``run``/``to_host`` are its three steps, timed apart by the bench."""

    name = "?"
    device = "cpu"
    dtype = "fp32"
    # Fixed-shape backends (Core ML) need the tiler's tile exactly as converted, so no balancing.
    any_shape = True

    def __init__(self, component: str):
        self.spec = registry.spec(component)
        self.component = component

    def supports(self, shape) -> bool:
        return True

    def prepare(self, x: np.ndarray):
        """The host input as this backend's own input (on its device, in its dtype and layout)."""
        return x

    def run(self, prepared):
        raise NotImplementedError

    def to_host(self, out) -> np.ndarray:
        return np.asarray(out, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.to_host(self.run(self.prepare(np.ascontiguousarray(x, dtype=np.float32))))

    def sync(self) -> None:
        """Wait for queued device work (``run`` may return before the device has finished)."""

    def reset_peak(self) -> None:
        """Start a new peak-memory measurement (and free cached blocks, so the peak is this call's own)."""

    def peak(self) -> int | None:
        """Peak device memory in bytes since ``reset_peak``, where the framework reports it."""
        return None

    def extra(self) -> dict:
        """Backend-specific facts for a benchmark row."""
        return {}

    def release(self) -> None:
        """Let the weights and cached device memory go."""

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.component}>"


def stats_arrays(stats, channel_axis: int, ndim: int = 5):
    """The latent statistics as float32 arrays that broadcast along ``channel_axis``."""
    shape = [1] * ndim
    shape[channel_axis] = -1
    return stats.mean.reshape(shape).astype(np.float32), stats.std.reshape(shape).astype(np.float32)


class MLXBackend(Backend):
    """An MLX model on MLX's default device, every MLX step under ``MLX_LOCK``."""

    name = "mlx"

    def __init__(self, model, component: str, stats=None):
        import mlx.core as mx

        super().__init__(component)
        self.model, self.stats = model, stats
        self.device = "gpu" if mx.default_device() == mx.gpu else "cpu"
        self.dtype = mlx_dtype_name(model)

    def prepare(self, x):
        import mlx.core as mx

        with MLX_LOCK:
            # The upscalers apply the statistics in float32 and cast themselves (pipelines.upsample).
            inp = mx.array(x) if self.spec.io == "upsample" else mx.array(x).astype(self.model.dtype)
            mx.eval(inp)
            return inp

    def run(self, inp):
        import mlx.core as mx

        with MLX_LOCK:
            out = _MLX_CALLS[self.spec.io](self, inp).astype(mx.float32)
            mx.eval(out)
            return out

    def to_host(self, out) -> np.ndarray:
        with MLX_LOCK:
            return np.array(out)

    def __call__(self, x):
        with MLX_LOCK:
            return super().__call__(x)

    def reset_peak(self) -> None:
        import mlx.core as mx

        with MLX_LOCK:
            mx.clear_cache()
            mx.reset_peak_memory()

    def peak(self) -> int:
        import mlx.core as mx

        return int(mx.get_peak_memory())

    def release(self) -> None:
        import mlx.core as mx

        self.model = None
        gc.collect()
        with MLX_LOCK:
            mx.clear_cache()


def mlx_dtype_name(model) -> str:
    """The dtype an MLX model holds its weights in, by its command-line name ('bf16', 'fp16', 'fp32'; '?' else)."""
    from mlx.utils import tree_flatten

    from ltx_ane.models.loading import DTYPES, mlx_dtype

    held = next((v.dtype for _, v in tree_flatten(model.parameters())), None)
    return next((name for name in DTYPES if mlx_dtype(name) == held), "?")


def _mlx_upsample(backend: MLXBackend, latent):
    from ltx_ane.models.upscaler.upsample import upsample

    return upsample(latent, backend.model, backend.stats)


# One function per calling convention (models.registry's ``io``).
_MLX_CALLS = {
    "decode": lambda backend, x: backend.model.decode_channels_last(x),
    "encode": lambda backend, x: backend.model.encode_channels_last(x),
    "upsample": _mlx_upsample,
}

TORCH_DTYPES = ("bf16", "fp16", "fp32")


class TorchBackend(Backend):
    """The ltx-core reference on ``device`` (default: the machine's accelerator) in ``dtype`` (default float32)."""

    name = "torch"

    def __init__(self, module, component: str, stats=None, device: str | None = None, dtype: str = "fp32"):
        import torch

        super().__init__(component)
        if dtype not in TORCH_DTYPES:
            raise LtxAneError(f"unknown dtype {dtype!r} for the torch backend (choose from {', '.join(TORCH_DTYPES)})")
        self.device, self.dtype = device or torch_accelerator(), dtype
        self.torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        if dtype == "fp32":
            from ltx_ane.runtime.precision import full_fp32_torch

            full_fp32_torch()
        self.module, self.stats = module.to(self.device, self.torch_dtype).eval(), stats

    def prepare(self, x):
        import torch

        if self.spec.io == "upsample":
            mean, std = stats_arrays(self.stats, 1)
            t = torch.from_numpy(np.ascontiguousarray(x * std + mean))
        else:  # channels-last host arrays, channels-first module
            t = torch.from_numpy(x).permute(0, 4, 1, 2, 3)
        return t.to(self.device, self.torch_dtype)

    def run(self, t):
        import torch

        with torch.inference_mode():
            return self.module(t)

    def to_host(self, out) -> np.ndarray:
        if self.spec.io == "upsample":
            mean, std = stats_arrays(self.stats, 1)
            return (out.float().cpu().numpy() - mean) / std
        return np.ascontiguousarray(out.permute(0, 2, 3, 4, 1).float().cpu().numpy())

    def sync(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        elif self.device == "mps":
            torch.mps.synchronize()

    def reset_peak(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated()) if self.device.startswith("cuda") else None

    def release(self) -> None:
        import torch

        self.module = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def torch_layout_weights(model) -> dict[str, np.ndarray]:
    """An MLX model's weights as float32 host arrays under ltx-core's names, in torch's layout."""
    from mlx.utils import tree_flatten

    with MLX_LOCK:
        import mlx.core as mx

        params = {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(model.parameters())}
    out = {}
    for name, value in params.items():
        if value.ndim == 5:
            value = value.transpose(0, 4, 1, 2, 3)
        elif value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        out[name] = np.ascontiguousarray(value)
    return out


def model_identity(model) -> dict:
    """What a Core ML package must have been converted from to stand in for ``model``: its config and weights."""
    from ltx_ane.coreml.package import weights_digest
    from ltx_ane.models.config import config_hash

    return {"config_hash": config_hash(model.config.raw), "weights_digest": weights_digest(torch_layout_weights(model).items())}


def run_identity(model) -> dict:
    """What a profile entry must have been measured with to apply to a run of ``model`` (``runtime.profile``):
    its config, its weights and the dtype it runs in."""
    return {**model_identity(model), "dtype": mlx_dtype_name(model)}


def torch_from_mlx(model, component: str):
    """The ltx-core module holding exactly an MLX model's weights (float32), whatever they were loaded from,
    so a reference backend never disagrees with the MLX one about weights (e.g. under --random-weights)."""
    import torch

    spec = registry.spec(component)
    module = spec.reference(model.config.raw)
    state = {name: torch.from_numpy(value) for name, value in torch_layout_weights(model).items()}
    own = module.state_dict()
    # What the MLX model does not hold is what its checkpoint keys skip (fixed buffers, unused statistics).
    skipped = spec.checkpoint_keys(model.config.raw).ignore
    missing = [k for k in own if k not in state and not skipped(k)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise LtxAneError(f"cannot copy the MLX {component} into ltx-core: missing {missing[:4]}, unexpected {unexpected[:4]}")
    module.load_state_dict(state, strict=False)
    return module.float().eval()


def build(choice: Choice, model, stats=None, runner_factory: Callable | None = None, torch_device: str | None = None,
          torch_dtype: str = "fp32", allow_ungated: bool = False, log: Callable[[str], None] | None = None) -> list[Backend]:
    """Backends for a choice. ``model`` is the MLX component (weights come from it for torch, which runs on
    ``torch_device``, by default the machine's accelerator); ``runner_factory`` makes a Core ML runner from
    (package, compute unit), by default ``coreml.runtime.CoreMLComponent``.

    A Core ML backend that cannot be made here (its package will not load or compile on this Mac) is dropped with
    a one-line note to ``log``, as a failing backend is during a run; so is one its gates refuse, when ``auto``
    chose it. An explicit choice its gates refuse is an error saying why (``allow_ungated`` admits a package
    without a measurement). With nothing left, ``auto`` falls back to MLX; an explicit choice fails.
    """
    from ltx_ane.runtime.coreml_backend import GateRefused

    out, failures = [], []
    identity = model_identity(model) if any(n.startswith("coreml") for n in choice.names) else None
    for name in choice.names:
        if name == "mlx":
            out.append(MLXBackend(model, choice.component, stats))
        elif name == "torch":
            from ltx_ane.reference import require_reference

            require_reference()
            out.append(TorchBackend(torch_from_mlx(model, choice.component), choice.component, stats,
                                    torch_device, torch_dtype))
        else:
            try:
                out.append(_coreml(choice, name, stats, runner_factory, allow_ungated, identity))
            except GateRefused as err:
                if choice.explicit:
                    raise
                failures.append(f"{name}: {err}")
            except Exception as err:  # cannot load or compile here: like a backend failing on its first tile
                failures.append(f"{name}: {_one_line(err)}")
    for line in failures:
        if log:
            log(f"note: not using {line}")
    if not out:
        if choice.explicit:
            raise LtxAneError(f"no backend for the {choice.component} could be made: {'; '.join(failures)}")
        if log:
            log(f"note: the {choice.component} runs on mlx instead")
        out.append(MLXBackend(model, choice.component, stats))
    return out


def _coreml(choice: Choice, name: str, stats, runner_factory, allow_ungated: bool, identity: dict) -> Backend:
    from ltx_ane.runtime.coreml_backend import CoreMLBackend

    if runner_factory is None:
        from ltx_ane.coreml.runtime import CoreMLComponent as runner_factory
    backend = CoreMLBackend(runner_factory(choice.package, name.split(":", 1)[1]), choice.component, stats,
                            allow_ungated, identity)
    backend.load()
    return backend


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:300] if text else type(error).__name__


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
