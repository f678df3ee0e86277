"""Load the transformer from a full LTX checkpoint (or build it with random weights at the real architecture).

The transformer's tensors are ``model.diffusion_model.*`` in the released files, next to the VAEs, vocoder and the
text connectors (``model.diffusion_model.{video,audio}_embeddings_connector.*``, which belong to the text path and
are skipped here). ``mx.load`` maps the file lazily, so only the transformer's tensors are read; fp8 tensors are
dequantised exactly on load (``io.checkpoint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import apply_weights, load_tensors, read_header
from ltx_ane.models.config import MODEL_PRESETS, load_preset
from ltx_ane.models.loading import KeyOps, Source, mlx_dtype, randomize, resolve_config
from ltx_ane.models.transformer.config import TransformerConfig
from ltx_ane.models.transformer.lora import fuse_loras
from ltx_ane.models.transformer.model import LTXModel
from ltx_ane.models.transformer.quantize import QuantizeMode, check_quantizable, quantize_transformer
from ltx_ane.models.transformer import streaming

TRANSFORMER_PREFIX = "model.diffusion_model."
TEXT_CONNECTORS = ("video_embeddings_connector.", "audio_embeddings_connector.")


def is_text_connector(name: str) -> bool:
    return name.startswith(TEXT_CONNECTORS)


def _preset_for(header) -> str:
    """Which released model a file without embedded config holds: LTX-2.3 has the text cross-attention AdaLN."""
    return "ltx23" if f"{TRANSFORMER_PREFIX}prompt_adaln_single.linear.weight" in header.tensors else "ltx2"


def transformer_keys() -> KeyOps:
    """``model.diffusion_model.*`` under model names, the text connectors (which belong to the text path) left out."""
    return KeyOps(renames=((TRANSFORMER_PREFIX, ""),), ignore=is_text_connector, required=TRANSFORMER_PREFIX)


def transformer_config(source: Source, preset: str = "ltx2") -> tuple[TransformerConfig, Path | None]:
    """The config (the source's own, else the checkpoint's embedded one, else a preset) and the resolved path."""
    if preset not in MODEL_PRESETS:
        raise LtxAneError(f"unknown transformer preset {preset!r} (choose from {', '.join(MODEL_PRESETS)})")

    def fallback(path):
        return load_preset(_preset_for(read_header(path)) if path is not None else preset)

    raw, path = resolve_config(source, TRANSFORMER_PREFIX, fallback, section="transformer")
    if path is not None:
        header = read_header(path)
        if not any(k.startswith(TRANSFORMER_PREFIX) and not is_text_connector(k[len(TRANSFORMER_PREFIX):])
                   for k in header.tensors):
            raise LtxAneError(f"{path} holds no transformer (no tensors under '{TRANSFORMER_PREFIX}')")
    return TransformerConfig.from_dict(raw), path


def read_transformer_tensors(path: Path) -> dict[str, mx.array]:
    """The transformer's tensors under model names, lazily (fp8 ones dequantised by ``io.checkpoint``)."""
    header = read_header(path)
    scaled = [k for k in header.tensors if k.startswith(TRANSFORMER_PREFIX) and k.endswith((".weight_scale", ".input_scale"))]
    if scaled:
        raise LtxAneError(
            f"{path} is a scaled-fp8 checkpoint ({scaled[0]}); only plain fp8 (cast) and bf16/fp16 files are supported"
        )
    ops = transformer_keys()
    return load_tensors(path, dict(ops.renames), ignore=ops.ignore)


def load_transformer(
    source: Source,
    dtype: str = "bf16",
    quantize: QuantizeMode | None = None,
    loras: Sequence[tuple[str | Path, float]] = (),
    seed: int = 0,
    preset: str = "ltx2",
    stream_blocks: bool = False,
) -> LTXModel:
    """The velocity model from ``source``; LoRAs (path, strength) fused at load, then optional quantisation.

    ``preset`` (a model preset: "ltx2", "ltx23", ...) picks the architecture for random weights without a config
    file. ``stream_blocks``: keep only the non-block weights resident and read each block's from the checkpoint
    while it runs (``streaming``).
    """
    config, path = transformer_config(source, preset)
    if source.random_weights and loras:
        raise LtxAneError("LoRAs cannot be fused into random weights")
    compute_dtype = mlx_dtype(dtype)
    model = LTXModel(config)  # parameters stay lazy (unevaluated) until weights are applied or randomised
    if stream_blocks:
        if quantize is not None:
            raise LtxAneError("block streaming reads bf16/fp16 blocks from the checkpoint and cannot be quantised; "
                              "choose one of the two")
        return _streamed(model, source, path, compute_dtype, loras, seed)
    if quantize is not None:
        check_quantizable(model, quantize)
    if source.random_weights:
        randomize(model, compute_dtype, seed)
    else:
        tensors = read_transformer_tensors(path)
        fuse_loras(tensors, loras, compute_dtype)
        apply_weights(model, tensors, compute_dtype, source=f"{path} (transformer)")
    if quantize is not None:
        quantize_transformer(model, quantize)
    return model


def _streamed(model: LTXModel, source: Source, path: Path | None, dtype, loras, seed: int) -> LTXModel:
    """The non-block weights loaded (or randomised) now, the blocks' left to a ``BlockStreamer``."""
    if source.random_weights:
        with streaming.without_blocks(model):
            randomize(model, dtype, seed)
        blocks = streaming.RandomBlocks(dtype, seed)
    else:
        tensors = read_transformer_tensors(path)
        # Fused lazily: every LoRA is checked against all weights now, but only the resident ones are read.
        fuse_loras(tensors, loras, dtype)
        streaming.check_block_weights(model, tensors, source=f"{path} (transformer)")
        with streaming.without_blocks(model):
            resident = {name: value for name, value in tensors.items() if not streaming.is_block_weight(name)}
            apply_weights(model, resident, dtype, source=f"{path} (transformer)")
        blocks = streaming.CheckpointBlocks(path, TRANSFORMER_PREFIX, dtype, loras)
    for block in model.transformer_blocks:
        streaming.release(block)
    model.block_streamer = streaming.BlockStreamer(blocks)
    return model
