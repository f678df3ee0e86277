"""Prompt-embedding files, the prompt cache, and cheap fingerprints of the models that made them.

Prompt file (``.safetensors``): ``video_context`` and ``audio_context`` (1, 1024, D) float32, plus
``video_context_negative`` and ``audio_context_negative`` when a negative prompt was encoded. Metadata: ``prompt``,
``negative_prompt`` (if any), ``gemma_hash``, ``ltx_hash``, ``ltx_ane_version``, ``tokens`` (valid token counts) and
``notes``. The contexts carry no padding (the connector's registers fill it), so their attention masks are all ones
and are not stored.

Fingerprints hash each safetensors header and file size, not the tensors: a 24 GB model is identified in
milliseconds, and any re-export changes its header.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ltx_ane import __version__
from ltx_ane.cache import cache_root
from ltx_ane.errors import LtxAneError

CONTEXT_NAMES = ("video_context", "audio_context")
NEGATIVE_SUFFIX = "_negative"
# Small files identified by their content; larger ones (weights) by header and size.
CONTENT_HASH_LIMIT = 64 * 2**20


@dataclass(frozen=True)
class PromptContext:
    """One prompt's video and audio contexts, (1, length, D) float32, and its number of valid tokens."""

    video_context: np.ndarray
    audio_context: np.ndarray
    num_tokens: int

    @property
    def video_mask(self) -> np.ndarray:
        return np.ones(self.video_context.shape[:2], dtype=np.int32)

    @property
    def audio_mask(self) -> np.ndarray:
        return np.ones(self.audio_context.shape[:2], dtype=np.int32)


@dataclass(frozen=True)
class PromptEmbeddings:
    """What a prompt file holds."""

    positive: PromptContext
    negative: PromptContext | None
    metadata: dict[str, str] = field(default_factory=dict)


def fingerprint_file(path: Path, digest=None) -> str:
    """sha256 of a safetensors header and the file size (or of the whole content for small other files)."""
    digest = digest or hashlib.sha256()
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}:".encode())
    with open(path, "rb") as f:
        if path.suffix == ".safetensors":
            head = f.read(8)
            digest.update(head)
            digest.update(f.read(min(int.from_bytes(head, "little"), size)))
        elif size <= CONTENT_HASH_LIMIT:
            digest.update(f.read())
    return digest.hexdigest()


def fingerprint_gemma(root: Path) -> str:
    """The model directory's config, tokenizer files and weight headers, in name order."""
    digest = hashlib.sha256()
    for path in sorted(root.iterdir()):
        if path.is_file() and (path.suffix in (".json", ".safetensors", ".model")):
            fingerprint_file(path, digest)
    return digest.hexdigest()


def write_prompt_file(path: str | Path, positive: PromptContext, negative: PromptContext | None,
                      metadata: dict[str, str]) -> Path:
    from safetensors.numpy import save_file

    from ltx_ane.io.latents import atomic_output

    tensors = {name: np.ascontiguousarray(getattr(positive, name), dtype=np.float32) for name in CONTEXT_NAMES}
    tokens = [positive.num_tokens]
    if negative is not None:
        tensors.update({name + NEGATIVE_SUFFIX: np.ascontiguousarray(getattr(negative, name), dtype=np.float32)
                        for name in CONTEXT_NAMES})
        tokens.append(negative.num_tokens)
    meta = {**metadata, "ltx_ane_version": __version__, "tokens": json.dumps(tokens)}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def read_prompt_file(path: str | Path) -> PromptEmbeddings:
    """A prompt file as written by ``ltx-ane encode-prompt`` (or the prompt cache)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise LtxAneError(f"prompt file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
            missing = [name for name in CONTEXT_NAMES if name not in keys]
            if missing:
                raise LtxAneError(f"{path} is not a prompt file (no {', '.join(missing)})")
            arrays = {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in keys}
            meta = dict(f.metadata() or {})
    except SafetensorError as e:
        raise LtxAneError(f"{path} is not a valid safetensors file ({e})") from None
    try:
        tokens = [int(t) for t in json.loads(meta.get("tokens", "[]"))]
    except (json.JSONDecodeError, TypeError, ValueError):
        raise LtxAneError(f"{path}: metadata 'tokens' is not a list of integers") from None
    tokens += [0] * (2 - len(tokens))
    positive = PromptContext(arrays["video_context"], arrays["audio_context"], tokens[0])
    negative = None
    if all(name + NEGATIVE_SUFFIX in arrays for name in CONTEXT_NAMES):
        negative = PromptContext(arrays["video_context" + NEGATIVE_SUFFIX],
                                 arrays["audio_context" + NEGATIVE_SUFFIX], tokens[1])
    return PromptEmbeddings(positive, negative, meta)


def default_cache_dir() -> Path:
    return cache_root() / "prompts"


class PromptCache:
    """One prompt file per (text, model hashes, settings, version) key, in a directory (default
    ``$LTX_ANE_CACHE/prompts``)."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()

    @staticmethod
    def key(text: str, hashes: dict[str, str], settings: dict[str, str]) -> str:
        payload = json.dumps({"text": text.strip(), "hashes": hashes, "settings": settings,
                              "version": __version__}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def get(self, key: str) -> PromptContext | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return read_prompt_file(path).positive
        except LtxAneError:  # a damaged entry is re-encoded and overwritten
            return None

    def put(self, key: str, context: PromptContext, metadata: dict[str, str]) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LtxAneError(f"cannot create the prompt cache {self.directory}: {e.strerror}") from None
        write_prompt_file(self._path(key), context, None, metadata)
