"""Checkpoint files: finding them, reading their headers, and loading one component's tensors.

A full LTX-2 checkpoint is a 40+ GB safetensors file holding thousands of tensors; a component needs a few
hundred of them. ``mx.load`` maps tensors lazily, so only the selected ones are ever read from disk.
Loading is strict: every tensor the model has must be in the file with the right shape, and every tensor
under the component's prefix must belong to the model (a few known statistics keys excepted).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ltx_ane.errors import LtxAneError

SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * SAFETENSORS_DTYPE_BYTES.get(self.dtype, 0)


@dataclass(frozen=True)
class CheckpointHeader:
    """What a safetensors file says about itself, read without loading any tensor."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]

    def config(self) -> dict | None:
        """The embedded ``config`` metadata as a dict, or None when the file carries none."""
        text = self.metadata.get("config")
        if text is None:
            return None
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise LtxAneError(f"{self.path}: the embedded config metadata is not valid JSON: {e}") from None
        if not isinstance(config, dict):
            raise LtxAneError(f"{self.path}: the embedded config metadata is not a JSON object")
        return config

    def keys_under(self, prefix: str) -> list[str]:
        return [k for k in self.tensors if k.startswith(prefix)]


def read_header(path: str | Path) -> CheckpointHeader:
    """Parse and validate a safetensors header: a truncated or foreign file fails here, before any load."""
    path = Path(path)
    if not path.exists():
        raise LtxAneError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise LtxAneError(f"checkpoint is a directory, expected a .safetensors file: {path}")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file is shorter than a safetensors header")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > min(size - 8, 100 * 2**20):
                raise ValueError("invalid header length")
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise LtxAneError(f"{path} is not a valid safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise LtxAneError(f"{path} is not a valid safetensors file (header is not an object)")
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    data_end = 0
    try:
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            info = TensorInfo(dtype=entry["dtype"], shape=tuple(int(s) for s in entry["shape"]))
            if end - begin != info.nbytes:
                raise ValueError(f"tensor {name} has {end - begin} bytes for shape {list(info.shape)} {info.dtype}")
            tensors[name] = info
            data_end = max(data_end, end)
    except (KeyError, TypeError, ValueError) as e:
        raise LtxAneError(f"{path} is not a valid safetensors file ({e})") from None
    if 8 + n + data_end > size:
        raise LtxAneError(
            f"{path} is truncated: its header describes {8 + n + data_end} bytes but the file has {size} "
            "(an incomplete download?)"
        )
    return CheckpointHeader(path=path, tensors=tensors, metadata=dict(metadata))


def resolve_checkpoint(spec: str | Path, wanted_prefix: str | None = None) -> Path:
    """A local file path, or a Hugging Face repo id resolved through the local cache.

    ``org/name`` picks the smallest cached safetensors file of that repo holding ``wanted_prefix``;
    ``org/name:file.safetensors`` names the file.
    """
    path = Path(spec).expanduser()
    if path.exists():
        return path
    text = str(spec)
    repo, _, filename = text.partition(":")
    if repo.count("/") != 1 or repo.startswith((".", "/")) or text.endswith(".safetensors") and not filename:
        raise LtxAneError(f"checkpoint not found: {spec}")
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(repo, local_files_only=True, allow_patterns=[filename or "*.safetensors"]))
    except Exception:  # the hub raises several types for "not in the cache"
        raise LtxAneError(
            f"checkpoint not found: {spec} is neither a file nor a Hugging Face repo in the local cache "
            f"(download it first, e.g. `hf download {repo}`)"
        ) from None
    if filename:
        candidate = snapshot / filename
        if not candidate.exists():
            raise LtxAneError(f"{filename} is not in the cached snapshot of {repo}")
        return candidate
    files = sorted(snapshot.rglob("*.safetensors"), key=lambda p: p.stat().st_size)
    for candidate in files:
        if wanted_prefix is None or read_header(candidate).keys_under(wanted_prefix):
            return candidate
    raise LtxAneError(f"no cached safetensors file of {repo} holds tensors under {wanted_prefix!r}")


def torch_to_mlx_layout(value, ndim_hint: int | None = None):
    """Torch conv weights are [O, I, *kernel]; MLX wants [O, *kernel, I]. Other tensors pass unchanged."""
    nd = value.ndim if ndim_hint is None else ndim_hint
    if nd == 5:
        return value.transpose(0, 2, 3, 4, 1)
    if nd == 4:
        return value.transpose(0, 2, 3, 1)
    return value


def load_tensors(path: Path, prefix_map: dict[str, str], ignore: Callable[[str], bool] = lambda k: False):
    """The tensors under the given prefixes, renamed (``prefix_map``: file prefix -> model prefix), lazily loaded."""
    import mlx.core as mx

    try:
        arrays = mx.load(str(path))
    except (RuntimeError, ValueError) as e:
        raise LtxAneError(f"cannot read {path}: {e}") from None
    out = {}
    for key, value in arrays.items():
        for file_prefix, model_prefix in prefix_map.items():
            if key.startswith(file_prefix):
                name = model_prefix + key[len(file_prefix) :]
                if not ignore(name):
                    out[name] = value
                break
    return out


def apply_weights(model, tensors: dict, dtype, source: str) -> None:
    """Put checkpoint tensors (torch layout, model names) into an MLX model, strictly.

    Missing, unexpected and mis-shaped tensors are all reported by name in one error.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    converted, misshaped = {}, []
    for name, value in tensors.items():
        if name not in expected:
            continue
        value = torch_to_mlx_layout(value)
        if tuple(value.shape) != tuple(expected[name].shape):
            misshaped.append(f"{name} {list(value.shape)} (model wants {list(expected[name].shape)})")
            continue
        # Row-contiguous copies: a transposed view of the file's buffer would be copied again by every conv call.
        converted[name] = mx.contiguous(value.astype(dtype))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped ({_names(misshaped)})")
    if problems:
        raise LtxAneError(f"{source}: weights do not match the model config: " + "; ".join(problems))
    model.update(tree_unflatten(list(converted.items())))
    mx.eval(model.parameters())


def _names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def hf_cache_dir() -> str:
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or "~/.cache/huggingface/hub"
