"""Build MLX components from a checkpoint (or at random), with the config the checkpoint carries.

Config precedence: ``--config FILE`` if given, else the checkpoint's embedded metadata, else the LTX-2 preset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ltx_ane.models.config import DecoderConfig, EncoderConfig, load_config_file, load_preset
from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import apply_weights, load_tensors, read_header, resolve_checkpoint

DTYPES = ("bf16", "fp16", "fp32")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
VAE_PREFIX = "vae."
STATS_PREFIX = "vae.per_channel_statistics."
# Statistics the checkpoints carry but the model never reads.
UNUSED_STATISTICS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")


def mlx_dtype(name: str):
    import mlx.core as mx

    try:
        return {"bf16": mx.bfloat16, "fp16": mx.float16, "fp32": mx.float32}[name]
    except KeyError:
        raise LtxAneError(f"unknown dtype {name!r} (choose from {', '.join(DTYPES)})") from None


@dataclass
class Source:
    """Where a component comes from: a checkpoint path/repo, or random weights; and an optional config file."""

    checkpoint: str | None = None
    config_file: str | None = None
    random_weights: bool = False

    def describe(self) -> str:
        return "random weights (real architecture)" if self.random_weights else str(self.checkpoint)


def vae_config(source: Source) -> tuple[dict, Path | None]:
    """The raw VAE config for a source and, unless random, the resolved checkpoint path."""
    path = None
    if not source.random_weights:
        if not source.checkpoint:
            raise LtxAneError("no VAE checkpoint given: pass --vae CKPT (a file or a Hugging Face repo id) or --random-weights")
        path = resolve_checkpoint(source.checkpoint, wanted_prefix=VAE_PREFIX)
    if source.config_file:
        return load_config_file(source.config_file), path
    if path is not None:
        embedded = read_header(path).config()
        if embedded is not None:
            if "vae" not in embedded:
                raise LtxAneError(f"{path}: the embedded config has no 'vae' section; pass --config")
            return embedded, path
        print(f"note: {path.name} embeds no config; using the LTX-2 VAE preset (--config overrides)", file=sys.stderr)
    return load_preset("ltx2"), path


def _is_unused_statistic(name: str) -> bool:
    return name.startswith("per_channel_statistics.") and name.split(".", 1)[1] in UNUSED_STATISTICS


def _load_vae_part(model, part: str, path: Path, dtype) -> None:
    header = read_header(path)
    if not header.keys_under(f"{VAE_PREFIX}{part}."):
        raise LtxAneError(f"{path} holds no VAE {part} (no tensors under '{VAE_PREFIX}{part}.')")
    tensors = load_tensors(
        path,
        {f"{VAE_PREFIX}{part}.": "", STATS_PREFIX: "per_channel_statistics."},
        ignore=_is_unused_statistic,
    )
    apply_weights(model, tensors, dtype, source=f"{path} (VAE {part})")


def _randomize(model, dtype, seed: int) -> None:
    """Real-architecture random weights: MLX's default init for convs, plausible latent statistics."""
    import mlx.core as mx

    mx.random.seed(seed)
    stats = model.per_channel_statistics
    c = stats["mean-of-means"].shape[0]
    stats["mean-of-means"] = mx.random.normal((c,)) * 0.1
    stats["std-of-means"] = mx.random.uniform(0.5, 1.5, (c,))
    model.set_dtype(dtype)
    mx.eval(model.parameters())


def load_decoder(source: Source, dtype: str = "bf16", seed: int = 0):
    from ltx_ane.models.video_vae.model import VideoDecoder

    raw, path = vae_config(source)
    model = VideoDecoder(DecoderConfig.from_dict(raw))
    if source.random_weights:
        _randomize(model, mlx_dtype(dtype), seed)
    else:
        _load_vae_part(model, "decoder", path, mlx_dtype(dtype))
    return model


def load_encoder(source: Source, dtype: str = "bf16", seed: int = 0):
    from ltx_ane.models.video_vae.model import VideoEncoder

    raw, path = vae_config(source)
    model = VideoEncoder(EncoderConfig.from_dict(raw))
    if source.random_weights:
        _randomize(model, mlx_dtype(dtype), seed)
    else:
        _load_vae_part(model, "encoder", path, mlx_dtype(dtype))
    return model
