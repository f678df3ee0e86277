"""Checkpoint files: finding them, reading their headers, and loading one component's tensors.

A full LTX-2 checkpoint is a 40+ GB safetensors file holding thousands of tensors; a component needs a few
hundred of them. ``mx.load`` maps tensors lazily, so only the selected ones are ever read from disk.
Loading is strict: every tensor the model has must be in the file with the right shape, and every tensor
under the component's prefix must belong to the model (a few known statistics keys excepted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ltx_ane.errors import LtxAneError

# Bits per element of every dtype the safetensors format defines (the official LTX-2 checkpoints also ship as fp8).
SAFETENSORS_DTYPE_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F6_E2M3": 6, "F6_E3M2": 6,
    "F4": 4, "C64": 64, "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U64": 64, "U32": 32, "U16": 16, "U8": 8, "BOOL": 8,
}
# fp8 tensors are dequantised on load (MLX cannot read them from a file); other exotic dtypes are refused by name.
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)  # [begin, end) of its bytes after the header

    @property
    def nbytes(self) -> int:
        bits = int(np.prod(self.shape, dtype=np.int64)) * SAFETENSORS_DTYPE_BITS.get(self.dtype, 0)
        return (bits + 7) // 8


@dataclass(frozen=True)
class CheckpointHeader:
    """What a safetensors file says about itself, read without loading any tensor."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int = 0  # file offset of the first tensor byte

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
            info = TensorInfo(dtype=entry["dtype"], shape=tuple(int(s) for s in entry["shape"]), offsets=(begin, end))
            if info.dtype not in SAFETENSORS_DTYPE_BITS:
                raise ValueError(f"tensor {name} has unknown dtype {info.dtype}")
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
    return CheckpointHeader(path=path, tensors=tensors, metadata=dict(metadata), data_start=8 + n)


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
        try:
            header = read_header(candidate)
        except LtxAneError:  # an incomplete download or a foreign file beside the one wanted
            continue
        if wanted_prefix is None or header.keys_under(wanted_prefix):
            return candidate
    raise LtxAneError(f"no cached safetensors file of {repo} holds tensors under {wanted_prefix!r}")


def torch_to_mlx_layout(value):
    """Torch conv weights are [O, I, *kernel]; MLX wants [O, *kernel, I]. Other tensors pass unchanged."""
    if value.ndim == 5:
        return value.transpose(0, 2, 3, 4, 1)
    if value.ndim == 4:
        return value.transpose(0, 2, 3, 1)
    return value


def load_tensors(path: Path, prefix_map: dict[str, str], ignore: Callable[[str], bool] = lambda k: False):
    """The tensors under the given prefixes, renamed (``prefix_map``: file prefix -> model prefix), lazily loaded."""
    import mlx.core as mx

    header = read_header(path)
    wanted = {}
    for key in header.tensors:
        for file_prefix, model_prefix in prefix_map.items():
            if key.startswith(file_prefix):
                name = model_prefix + key[len(file_prefix) :]
                if not ignore(name):
                    wanted[key] = name
                break
    plain = {k: n for k, n in wanted.items() if header.tensors[k].dtype in MLX_READABLE}
    other = sorted(k for k in wanted if k not in plain and header.tensors[k].dtype not in FP8_DTYPES)
    if other:
        raise LtxAneError(f"{path}: cannot load {other[0]} ({header.tensors[other[0]].dtype}"
                          f"{f', and {len(other) - 1} more' if len(other) > 1 else ''}): only float, integer and fp8 tensors are read")
    out = {}
    if plain:
        try:
            arrays = _load_some(header, plain) if _has_fp8(header) else mx.load(str(path))
        except (RuntimeError, ValueError) as e:
            raise LtxAneError(f"cannot read {path}: {e}") from None
        out.update({name: arrays[key] for key, name in plain.items()})
    for key, name in wanted.items():
        if key not in plain:
            out[name] = mx.array(read_fp8(header, key)).astype(mx.bfloat16)
    return out


MLX_READABLE = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL")


def _has_fp8(header: CheckpointHeader) -> bool:
    return any(info.dtype in FP8_DTYPES for info in header.tensors.values())


def _load_some(header: CheckpointHeader, keys) -> dict:
    """Tensors of a file that also holds fp8 ones (which ``mx.load`` refuses), read from their bytes."""
    import mlx.core as mx

    out = {}
    for key in keys:
        info = header.tensors[key]
        if info.dtype == "BF16":
            out[key] = mx.array(_read_bytes(header, key, np.uint16)).view(mx.bfloat16)
        else:
            out[key] = mx.array(_read_bytes(header, key, _NUMPY_DTYPES[info.dtype]))
    return out


_NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                 "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
                 "BOOL": np.bool_}


def _read_bytes(header: CheckpointHeader, key: str, dtype) -> np.ndarray:
    info = header.tensors[key]
    begin, end = info.offsets
    with open(header.path, "rb") as f:
        f.seek(header.data_start + begin)
        data = f.read(end - begin)
    return np.frombuffer(data, dtype=dtype).reshape(info.shape)


def fp8_table(dtype: str) -> np.ndarray:
    """float32 value of each of the 256 codes of an fp8 format (E4M3 'fn': no infinities, 0x7f/0xff are NaN)."""
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp_bits, man_bits, bias = (4, 3, 7) if dtype == "F8_E4M3" else (5, 2, 15)
    exponent = (codes >> man_bits) & ((1 << exp_bits) - 1)
    mantissa = (codes & ((1 << man_bits) - 1)).astype(np.float64)
    normal = (1 + mantissa / (1 << man_bits)) * np.exp2(exponent.astype(np.float64) - bias)
    subnormal = (mantissa / (1 << man_bits)) * np.exp2(1.0 - bias)
    values = sign * np.where(exponent == 0, subnormal, normal)
    if dtype == "F8_E4M3":
        values[(codes & 0x7F) == 0x7F] = np.nan
    else:
        top = exponent == (1 << exp_bits) - 1
        values[top] = np.where(mantissa[top] == 0, sign[top] * np.inf, np.nan)
    return values.astype(np.float32)


def read_fp8(header: CheckpointHeader, key: str) -> np.ndarray:
    """One fp8 tensor, dequantised to float32 through a 256-entry table."""
    return fp8_table(header.tensors[key].dtype)[_read_bytes(header, key, np.uint8)]


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
