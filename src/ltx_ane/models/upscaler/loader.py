"""Latent upscalers from their files (bare keys: ``initial_conv.weight``, ``upsampler.conv.weight`` ...), or at
random; the config from ``--config``, the file's metadata, or the preset its keys point to."""

from __future__ import annotations

import sys
from pathlib import Path

from ltx_ane.errors import LtxAneError
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import KeyOps, load_into_mlx, mlx_dtype, randomize
from ltx_ane.models.upscaler.config import UpsamplerConfig
from ltx_ane.models.upscaler.model import BLUR_KERNEL_KEY, LatentUpsampler



def upscaler_keys(drop: str | None = None) -> KeyOps:
    """Upscaler files hold the model's own names; ``drop`` is a fixed buffer the model does not keep."""
    return KeyOps(renames=(("", ""),), ignore=lambda name: name == drop)


def kind_of(config: UpsamplerConfig) -> str:
    return "temporal" if config.temporal_upsample else "spatial"


def _kind_from_keys(header) -> str | None:
    """'spatial'/'temporal' from the upsampler's tensors, or None when the file holds no upscaler."""
    if "initial_conv.weight" not in header.tensors:
        return None
    if "upsampler.conv.weight" in header.tensors:
        return "spatial"
    info = header.tensors.get("upsampler.0.weight")
    if info is None:
        return None
    return "temporal" if len(info.shape) == 5 else "spatial"


def _resolve(spec: str, expected_kind: str | None) -> Path:
    """A file, or a cached Hugging Face repo's file (``org/name:file.safetensors`` names one).

    For a bare ``org/name``, ``resolve_checkpoint`` picks the repo's smallest file with upscaler keys; a repo may
    hold both upscalers, so when that one is of the other kind, take the smallest file of the wanted kind.
    """
    from ltx_ane.io.checkpoint import read_header, resolve_checkpoint

    path = resolve_checkpoint(spec, wanted_prefix="initial_conv.")
    if expected_kind is None or Path(spec).expanduser().exists() or ":" in str(spec):
        return path
    if _kind_from_keys(read_header(path)) == expected_kind:
        return path
    snapshot = next((p for p in path.parents if p.parent.name == "snapshots"), path.parent)
    for candidate in sorted(snapshot.rglob("*.safetensors"), key=lambda p: p.stat().st_size):
        if _kind_from_keys(read_header(candidate)) == expected_kind:
            return candidate
    return path  # the kind check reports the mismatch


def upscaler_config(source, expected_kind: str | None = None) -> tuple[UpsamplerConfig, Path | None]:
    """The config of an upscaler source and, unless random, its resolved file.

    Precedence: ``--config FILE``, then the file's embedded metadata, then the preset its keys point to.
    ``expected_kind`` ('spatial'/'temporal') turns a file passed under the wrong flag into a clear error.
    """
    from ltx_ane.io.checkpoint import read_header

    path, header, note = None, None, None
    if source.checkpoint:
        path = _resolve(source.checkpoint, expected_kind)
        header = read_header(path)
    elif not source.random_weights:
        raise LtxAneError("no upscaler file given (pass one, or --random-weights)")

    key_kind = None
    if header is not None:
        key_kind = _kind_from_keys(header)
        if key_kind is None and not source.random_weights:
            what = "a VAE" if header.keys_under("vae.") else "no latent upscaler"
            raise LtxAneError(f"{path} holds {what} (no 'initial_conv'/'upsampler' tensors)")

    if source.override() is not None:
        raw = source.override()
        if "vae" in raw or "decoder_blocks" in raw:
            preset = f"{expected_kind or 'spatial'}-x2"
            raise LtxAneError(f"the config for the {expected_kind or 'latent'} upscaler is a VAE config; "
                              f"pass the upscaler's (e.g. --config {preset})")
    elif header is not None and header.config() is not None:
        raw = header.config()
        if "vae" in raw or "transformer" in raw:
            raise LtxAneError(f"{path}: the embedded config is not an upscaler's (it has a 'vae'/'transformer' section)")
    elif key_kind is not None:
        raw = load_preset(f"{key_kind}-x2")
        if key_kind == "spatial":
            # Later releases store the plain Conv2d + pixel-shuffle form under ``upsampler.0``.
            raw["rational_resampler"] = "upsampler.conv.weight" in header.tensors
        raw["mid_channels"] = int(header.tensors["initial_conv.weight"].shape[0])
        note = f"note: {path.name} embeds no config; using the {key_kind}-x2 preset (--config overrides)"
    elif expected_kind is not None:
        raw = load_preset(f"{expected_kind}-x2")
    else:
        raise LtxAneError("cannot tell which upscaler to build: pass a file or --config")

    config = UpsamplerConfig.from_dict(raw)
    kind = kind_of(config)
    where = path if path is not None else "the config"
    if key_kind is not None and key_kind != kind and not source.random_weights:
        raise LtxAneError(f"{path}: its tensors are a {key_kind} upscaler's but its config describes a {kind} one")
    if expected_kind is not None and kind != expected_kind:
        actual = key_kind if key_kind is not None and not source.random_weights else kind
        raise LtxAneError(f"{where} is a {actual} upscaler, not a {expected_kind} one (pass it with --{actual})")
    if note:  # only once the file is known to be usable, so that an error stays a single line
        print(note, file=sys.stderr)
    return config, path


def load_upscaler(source, dtype: str = "bf16", expected_kind: str | None = None, seed: int = 0) -> LatentUpsampler:
    """An MLX ``LatentUpsampler`` from a ``loading.Source``: its file (strictly), or random weights."""
    from ltx_ane.io.checkpoint import read_header

    config, path = upscaler_config(source, expected_kind)
    model = LatentUpsampler(config)
    if source.random_weights:
        randomize(model, mlx_dtype(dtype), seed)
        return model
    header = read_header(path)
    if config.spatial_upsample and config.rational_resampler:
        info = header.tensors.get(BLUR_KERNEL_KEY)
        if info is None:
            raise LtxAneError(f"{path}: weights do not match the model config: 1 missing ({BLUR_KERNEL_KEY})")
        if info.shape != (1, 1, 5, 5):
            raise LtxAneError(f"{path}: {BLUR_KERNEL_KEY} has shape {list(info.shape)}, expected [1, 1, 5, 5]")
    # The blur kernel is a fixed buffer with no role at scale 2; every other tensor must match the model.
    drop = BLUR_KERNEL_KEY if config.rational_resampler else None
    load_into_mlx(model, path, upscaler_keys(drop), mlx_dtype(dtype), f"{kind_of(config)} upscaler")
    return model
