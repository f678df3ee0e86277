"""The ltx-core (PyTorch) reference: build it, give it random weights, and write checkpoints in the real format.

Used by the parity tests and the benchmarks, never by the MLX path. Needs the ``reference`` extra
(torch, then ltx-core 1.0.0). This module holds what every family shares (random weights, checkpoint writing and
strict loading); the builders are per family: ``video_vae``, ``upscaler``, ``transformer``, ``audio``, ``text``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltx_ane.errors import LtxAneError

# Present in real checkpoints next to the two statistics the model uses.
UNUSED_STATISTICS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")


def require_reference():
    try:
        import ltx_core  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise LtxAneError(
            "the ltx-core reference is not installed: `pip install torch==2.13.0 && pip install 'ltx-ane[reference]'`"
        ) from None
    stand_in_for_torchaudio()


def stand_in_for_torchaudio() -> None:
    """Let ``ltx_core.model.audio_vae`` and ``ltx_pipelines`` import where torchaudio cannot load.

    ltx-core imports torchaudio at import time, only for the mel transform and resampling of audio *input*; the
    index's torchaudio does not load against the CPU torch wheel the tests use. When the real module fails to
    import, an empty stand-in takes its place (anything that calls it fails loudly).
    """
    import importlib.machinery
    import sys
    import types

    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        for name in [n for n in sys.modules if n.startswith("torchaudio")]:
            del sys.modules[name]
        stub = types.ModuleType("torchaudio")
        stub.__doc__ = "stand-in: the real torchaudio does not load here"
        stub.transforms = types.ModuleType("torchaudio.transforms")
        stub.functional = types.ModuleType("torchaudio.functional")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)  # transformers probes it with find_spec
        sys.modules.update({"torchaudio": stub, "torchaudio.transforms": stub.transforms,
                            "torchaudio.functional": stub.functional})


def randomize_statistics(module, generator) -> None:
    import torch

    stats = module.per_channel_statistics
    c = stats.get_buffer("mean-of-means").shape[0]
    stats.get_buffer("mean-of-means").copy_(torch.randn(c, generator=generator) * 0.1)
    stats.get_buffer("std-of-means").copy_(torch.rand(c, generator=generator) + 0.5)


def randomize_parameters(module, generator) -> None:
    """Deterministic random weights at the scale of torch's default init (fan-in uniform). Drawn on the CPU (where
    ``generator`` lives) whatever the default device, so the values do not depend on the machine."""
    import torch

    device = generator.device
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                bound = (1.0 / (p[0].numel())) ** 0.5
                p.copy_((torch.rand(p.shape, generator=generator, device=device) * 2 - 1) * bound)
            elif name.endswith("weight"):  # norm scales
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator, device=device))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator, device=device))


class _skip_init:
    """Make torch.nn.init's fills no-ops while a module is built, because every weight is overwritten next
    (seconds instead of minutes at full size). Building on the meta device would be faster still, but would lose
    buffers computed in ``__init__``, such as the upscaler's blur kernel."""

    NAMES = ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "xavier_uniform_", "zeros_", "ones_",
             "constant_", "trunc_normal_")

    def __enter__(self):
        import torch.nn.init as init

        self.saved = {name: getattr(init, name) for name in self.NAMES}
        for name in self.NAMES:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)

    def __exit__(self, *exc):
        import torch.nn.init as init

        for name, fn in self.saved.items():
            setattr(init, name, fn)


def build_with_random_weights(make, seed: int, statistics: bool):
    """An ltx-core module from ``make()`` with deterministic random weights drawn from ``seed``."""
    require_reference()
    import torch

    with _skip_init():
        model = make().eval()
    g = torch.Generator().manual_seed(seed)
    randomize_parameters(model, g)
    if statistics:
        randomize_statistics(model, g)
    return model


def write_checkpoint(path: str | Path, tensors: dict, config: dict | None, dtype: str = "bf16") -> Path:
    """Save tensors as the real checkpoints are stored: bf16, config JSON under the metadata key ``config``."""
    import torch
    from safetensors.torch import save_file

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    data = {k: v.detach().to(torch_dtype).contiguous() for k, v in tensors.items()}
    metadata = {"config": json.dumps(config)} if config is not None else None
    save_file(data, str(path), metadata=metadata)
    return Path(path)


def load_weights(module, path: str | Path, ops, what: str) -> None:
    """Strictly load a checkpoint into an ltx-core module in float32 through a component's key operations.

    The keys the MLX side skips as not held by its model (``ops.ignore``) are loaded where the ltx-core module does
    hold them (the upscaler's blur kernel buffer). Missing, unexpected or mis-shaped tensors: one error, by name.
    """
    from dataclasses import replace

    from safetensors import safe_open

    from ltx_ane.models.loading import load_into_torch

    path = Path(path)
    ops.check_present(path, what)
    expected = module.state_dict()
    ops = replace(ops, ignore=lambda name, skip=ops.ignore: skip(name) and name not in expected)
    with safe_open(str(path), framework="pt") as f:
        shapes = {name: tuple(f.get_slice(key).get_shape()) for key, name in ops.select(f.keys()).items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    misshaped = [f"{k} {list(v)} (model wants {list(expected[k].shape)})" for k, v in shapes.items()
                 if k in expected and v != tuple(expected[k].shape)]
    problems = [f"{len(v)} {kind} ({', '.join(v[:4])}{', ...' if len(v) > 4 else ''})"
                for kind, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if v]
    if problems:
        raise LtxAneError(f"{path}: weights do not match the config: " + "; ".join(problems))
    load_into_torch(module, path, ops)


def from_checkpoint(component: str, path: str | Path, config: dict):
    """The ltx-core module of a registry component with a checkpoint's (rounded) weights, in float32."""
    from ltx_ane.models.registry import spec

    s = spec(component)
    module = s.reference(config)
    load_weights(module, path, s.checkpoint_keys(config), s.title)
    return module


def load_checkpoint_into(module, path: str | Path, prefix_map: dict[str, str]) -> None:
    """Load a checkpoint into a reference module (fp32) by prefix renames, skipping the unused statistics."""
    from ltx_ane.models.loading import KeyOps, load_into_torch

    ops = KeyOps(tuple(prefix_map.items()), ignore=lambda name: name.split(".")[-1] in UNUSED_STATISTICS)
    load_into_torch(module, path, ops)
