"""The one loading layer: where weights come from, how checkpoint keys map to model names, strict application
to MLX and torch modules, and seeded random weights.

Every model family describes its checkpoint keys declaratively with :class:`KeyOps` (prefix match and rename, as
ltx-core's ``SDOps``) and loads through :func:`load_into_mlx`; the ltx-core reference loads the same file through
:func:`load_into_torch`, so both sides always compute with the same rounded numbers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import apply_weights, load_tensors, read_header, resolve_checkpoint

DTYPES = ("bf16", "fp16", "fp32")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def mlx_dtype(name: str):
    import mlx.core as mx

    try:
        return {"bf16": mx.bfloat16, "fp16": mx.float16, "fp32": mx.float32}[name]
    except KeyError:
        raise LtxAneError(f"unknown dtype {name!r} (choose from {', '.join(DTYPES)})") from None


@dataclass
class Source:
    """Where a component comes from: a checkpoint path or Hugging Face repo id, or random weights; and an optional
    config (a ``--config`` file or preset name, or a config dict) that overrides the checkpoint's metadata."""

    checkpoint: str | None = None
    config_file: str | None = None
    random_weights: bool = False
    config: dict | None = None

    def describe(self) -> str:
        return "random weights (real architecture)" if self.random_weights else str(self.checkpoint)

    def override(self) -> dict | None:
        """The config given with the source (dict first, then file), or None to read the checkpoint's."""
        from ltx_ane.models.config import load_config_file

        if self.config is not None:
            return self.config
        return load_config_file(self.config_file) if self.config_file else None


@dataclass(frozen=True)
class KeyOps:
    """How a component's checkpoint keys become model parameter names.

    ``renames`` maps a file prefix to a model prefix (the first matching prefix wins; ``""`` matches every key);
    ``ignore`` names model-side keys the file may carry that the model does not hold (fixed buffers, unused
    statistics); ``required`` is the prefix whose absence means the file holds no such component at all;
    ``layout`` (model name, tensor) -> tensor turns a torch layout the generic apply does not know into MLX's
    (the 3-D Conv1d and ConvTranspose1d weights, whose orders differ).
    """

    renames: tuple[tuple[str, str], ...]
    ignore: Callable[[str], bool] = field(default=lambda name: False)
    required: str = ""
    layout: Callable[[str, Any], Any] | None = None

    def model_name(self, key: str) -> str | None:
        for file_prefix, model_prefix in self.renames:
            if key.startswith(file_prefix):
                name = model_prefix + key[len(file_prefix):]
                return None if self.ignore(name) else name
        return None

    def select(self, keys) -> dict[str, str]:
        """file key -> model name for every key this component reads."""
        out = {}
        for key in keys:
            name = self.model_name(key)
            if name is not None:
                out[key] = name
        return out

    def check_present(self, path: Path, what: str) -> None:
        if self.required and not read_header(path).keys_under(self.required):
            raise LtxAneError(f"{path} holds no {what} (no tensors under '{self.required}')")


def load_into_mlx(model, path: Path, ops: KeyOps, dtype, what: str) -> None:
    """Strictly apply a checkpoint's tensors to an MLX model (missing, unexpected, mis-shaped: one error)."""
    ops.check_present(path, what)
    tensors = load_tensors(path, dict(ops.renames), ignore=ops.ignore)
    if ops.layout is not None:
        tensors = {name: ops.layout(name, value) for name, value in tensors.items()}
    apply_weights(model, tensors, dtype, source=f"{path} ({what})")


def fill_weights(model, source: Source, path: Path | None, ops: KeyOps, dtype: str, seed: int, what: str):
    """The model with seeded random weights (``source.random_weights``) or, strictly, its checkpoint's; returned."""
    if source.random_weights:
        randomize(model, mlx_dtype(dtype), seed)
    else:
        load_into_mlx(model, path, ops, mlx_dtype(dtype), what)
    return model


def load_into_torch(module, path: str | Path, ops: KeyOps) -> None:
    """The same tensors into an ltx-core module, strictly, in float32 (reference side of the parity tests)."""
    import torch
    from safetensors import safe_open

    state = {}
    with safe_open(str(path), framework="pt") as f:
        for key, name in ops.select(f.keys()).items():
            state[name] = f.get_tensor(key).to(torch.float32)
    module.load_state_dict(state, strict=True)
    module.to(torch.float32)


# Name rules of the seeded random initialiser, first match wins: (suffix, kind). Latent statistics (the VAEs')
# and the text connectors' learnable registers, which the released init draws uniform in [-1, 1].
_NAME_RULES = (("std-of-means", "std"), ("mean-of-means", "mean"), ("learnable_registers", "unit-uniform"))


def randomize(model, dtype, seed: int = 0) -> None:
    """Real-architecture random weights, reproducible from ``seed``: matrices and kernels fan-in uniform (the
    scale of torch's default init), 1-D weights (norm scales) near 1, other vectors small; latent statistics
    plausible (means near 0, stds in [0.5, 1.5]); the text connectors' registers uniform in [-1, 1]. Buffers that
    are computed rather than learned (filters, STFT bases) are the caller's to set afterwards. Evaluated in groups
    of about 2^28 values, so a 19B model never exists in float32 at once."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    key = mx.random.key(seed)
    group, count = [], 0

    def flush():
        model.update(tree_unflatten(group))
        mx.eval([v for _, v in group])
        group.clear()

    for name, p in tree_flatten(model.parameters()):
        key, sub = mx.random.split(key)
        kind = next((k for suffix, k in _NAME_RULES if name.endswith(suffix)), None)
        if kind == "std":
            value = mx.random.uniform(0.5, 1.5, p.shape, key=sub)
        elif kind == "unit-uniform":
            value = mx.random.uniform(-1, 1, p.shape, key=sub)
        elif kind == "mean":
            value = mx.random.normal(p.shape, key=sub) * 0.1
        elif p.ndim > 1:
            bound = (1.0 / (p[0].size)) ** 0.5
            value = mx.random.uniform(-bound, bound, p.shape, key=sub)
        elif name.endswith("weight"):
            value = 1 + 0.1 * mx.random.normal(p.shape, key=sub)
        else:
            value = 0.05 * mx.random.normal(p.shape, key=sub)
        group.append((name, value.astype(dtype)))
        count += p.size
        if count >= 2**28:
            flush()
            count = 0
    if group:
        flush()


def resolve_config(source: Source, wanted_prefix: str, fallback: Callable[[Path | None], dict],
                   section: str | None = None) -> tuple[dict, Path | None]:
    """The raw config of a component and, unless random, its resolved checkpoint path; shared by MLX and Core ML.

    Precedence: the source's own config (dict or ``--config``), then the checkpoint's embedded metadata (which must
    hold ``section`` when one is named), then ``fallback(path)`` (a preset, with a note when a file embeds none).
    """
    path = None
    if not source.random_weights:
        if not source.checkpoint:
            raise LtxAneError("no checkpoint given: pass a file or Hugging Face repo id, or --random-weights")
        path = resolve_checkpoint(source.checkpoint, wanted_prefix=wanted_prefix)
    given = source.override()
    if given is not None:
        return given, path
    if path is not None:
        embedded = read_header(path).config()
        if embedded is not None:
            if section is not None and section not in embedded:
                raise LtxAneError(f"{path}: the embedded config has no '{section}' section; pass --config")
            return embedded, path
    raw = fallback(path)
    if path is not None:
        print(f"note: {path.name} embeds no config; using a preset (--config overrides)", file=sys.stderr)
    return raw, path
