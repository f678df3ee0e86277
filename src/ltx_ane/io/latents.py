"""The latent and raw-video ``.safetensors`` formats, and atomic output files.

Latent file: tensor ``latent`` (B, C, F, h, w) float32, metadata ``fps``, ``height``, ``width``, ``frames`` (pixel
size of the video it decodes to) and ``config`` (the VAE config JSON). Only ``latent`` is required on input.
Raw-video file: tensor ``video`` (B, 3, F, H, W) float32 in [-1, 1].
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ltx_ane.errors import LtxAneError


def check_writable(path: str | Path) -> Path:
    """Fail before any work if ``path`` cannot be written; returns its directory."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise LtxAneError(f"output path is a directory: {path}")
    if not parent.is_dir():
        raise LtxAneError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise LtxAneError(f"cannot write {path}: directory {parent} is not writable")
    return parent


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` only if the block finishes.

    A failed or interrupted write leaves nothing under the final name (and removes the temporary file).
    """
    path = Path(path)
    parent = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=parent)
    except OSError as e:
        raise LtxAneError(f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the final file should look like any other output
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class LatentFile:
    latent: np.ndarray  # (B, C, F, h, w) float32
    fps: float | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    config: dict | None = field(default=None, repr=False)

    def metadata(self) -> dict[str, str]:
        meta = {}
        for key in ("fps", "height", "width", "frames"):
            value = getattr(self, key)
            if value is not None:
                meta[key] = str(value)
        if self.config is not None:
            meta["config"] = json.dumps(self.config)
        return meta


def _read_safetensors(path: Path, tensor: str) -> tuple[np.ndarray, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        raise LtxAneError(f"input not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            if tensor not in f.keys():
                raise LtxAneError(f"{path} has no tensor named {tensor!r} (it has: {', '.join(list(f.keys())[:5]) or 'none'})")
            meta = f.metadata() or {}
            if f.get_slice(tensor).get_dtype() == "BF16":
                raise LtxAneError(f"{path}: tensor {tensor!r} is bf16; store it as float32 or float16")
            array = f.get_tensor(tensor)
    except SafetensorError as e:
        raise LtxAneError(f"{path} is not a valid safetensors file ({e})") from None
    except OSError as e:
        raise LtxAneError(f"cannot read {path}: {e}") from None
    return np.asarray(array, dtype=np.float32), meta


def _meta_number(meta: dict, key: str, kind, path: Path):
    if key not in meta:
        return None
    try:
        return kind(meta[key])
    except ValueError:
        raise LtxAneError(f"{path}: metadata {key}={meta[key]!r} is not a number") from None


def read_latent(path: str | Path) -> LatentFile:
    path = Path(path)
    latent, meta = _read_safetensors(path, "latent")
    if latent.ndim != 5:
        raise LtxAneError(f"{path}: latent must be 5-D (B, C, F, h, w), got shape {list(latent.shape)}")
    config = None
    if "config" in meta:
        try:
            config = json.loads(meta["config"])
        except json.JSONDecodeError:
            raise LtxAneError(f"{path}: metadata 'config' is not valid JSON") from None
    return LatentFile(
        latent=latent,
        fps=_meta_number(meta, "fps", float, path),
        height=_meta_number(meta, "height", int, path),
        width=_meta_number(meta, "width", int, path),
        frames=_meta_number(meta, "frames", int, path),
        config=config,
    )


def write_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """float32 tensors and string metadata as one safetensors file, written atomically."""
    from safetensors.numpy import save_file

    data = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(data, str(tmp), metadata=metadata or None)


def write_latent(path: str | Path, latent_file: LatentFile) -> None:
    write_tensors(path, {"latent": latent_file.latent}, latent_file.metadata())


def read_video_tensor(path: str | Path) -> tuple[np.ndarray, dict[str, str]]:
    """A raw-video file: (B, 3, F, H, W) float32 in [-1, 1], and its metadata."""
    path = Path(path)
    video, meta = _read_safetensors(path, "video")
    if video.ndim != 5:
        raise LtxAneError(f"{path}: video must be 5-D (B, 3, F, H, W), got shape {list(video.shape)}")
    return video, meta


def write_video_tensor(path: str | Path, video: np.ndarray, fps: float | None = None) -> None:
    write_tensors(path, {"video": video}, {"fps": str(fps)} if fps is not None else None)


class RawVideoWriter:
    """Stream (B, 3, f, H, W) chunks into a raw-video safetensors file of known final shape.

    safetensors needs every size in its header up front; the total frame count is known before decoding
    starts, so the header is written first and chunks land in a memory map of the data region.
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], fps: float | None = None):
        self.path, self.shape, self.fps = Path(path), tuple(int(s) for s in shape), fps
        self.frames_written = 0

    def __enter__(self) -> "RawVideoWriter":
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        nbytes = int(np.prod(self.shape)) * 4
        header = {"video": {"dtype": "F32", "shape": list(self.shape), "data_offsets": [0, nbytes]}}
        if self.fps is not None:
            header["__metadata__"] = {"fps": str(self.fps)}
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)  # the data region starts 8-byte aligned
        with open(tmp, "wb") as f:
            f.write(len(text).to_bytes(8, "little") + text)
            f.truncate(8 + len(text) + nbytes)
        self._data = np.memmap(tmp, dtype=np.float32, mode="r+", offset=8 + len(text), shape=self.shape)
        return self

    def write(self, chunk: np.ndarray) -> None:
        f = chunk.shape[2]
        self._data[:, :, self.frames_written : self.frames_written + f] = chunk
        self.frames_written += f

    def __exit__(self, exc_type, exc, tb) -> None:
        self._data.flush()
        del self._data
        if exc_type is None and self.frames_written != self.shape[2]:
            exc = LtxAneError(f"wrote {self.frames_written} of {self.shape[2]} frames")
            self._atomic.__exit__(type(exc), exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)
