"""Load the transformer from a full LTX checkpoint (or build it with random weights at the real architecture).

The transformer's tensors are ``model.diffusion_model.*`` in the released files, next to the VAEs, vocoder and the
text connectors (``model.diffusion_model.{video,audio}_embeddings_connector.*``, which belong to the text path and
are skipped here). ``mx.load`` maps the file lazily, so only the transformer's tensors are read. fp8 files
(``F8_E4M3`` tensors, which ``mx.load`` hands over as raw uint8) are dequantised exactly on load.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import apply_weights, load_tensors, resolve_checkpoint
from ltx_ane.models.config import load_config_file
from ltx_ane.models.loading import Source, mlx_dtype
from ltx_ane.models.transformer.config import TransformerConfig
from ltx_ane.models.transformer.lora import fuse_loras
from ltx_ane.models.transformer.model import LTXModel
from ltx_ane.models.transformer.presets import PRESETS
from ltx_ane.models.transformer.quantize import QuantizeMode, check_quantizable, quantize_transformer

TRANSFORMER_PREFIX = "model.diffusion_model."
TEXT_CONNECTORS = ("video_embeddings_connector.", "audio_embeddings_connector.")
FP8_DTYPE = "F8_E4M3"


def is_text_connector(name: str) -> bool:
    return name.startswith(TEXT_CONNECTORS)


def safetensors_header(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({tensor name: safetensors dtype}, metadata) of a file, reading only its header.

    (``io.checkpoint.read_header`` does not know the 1-byte fp8 dtypes yet.)
    """
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(length))
        metadata = header.pop("__metadata__", None) or {}
        return {name: entry["dtype"] for name, entry in header.items()}, metadata
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LtxAneError(f"{path} is not a valid safetensors file ({e})") from None


def _preset_for(dtypes: dict[str, str]) -> str:
    """Which released model a file without embedded config holds: LTX-2.3 has the text cross-attention AdaLN."""
    return "ltx23" if f"{TRANSFORMER_PREFIX}prompt_adaln_single.linear.weight" in dtypes else "ltx2"


def transformer_config(source: Source, preset: str = "ltx2") -> tuple[TransformerConfig, Path | None]:
    """The config (``--config`` file, else the checkpoint's embedded one, else a preset) and the resolved path."""
    if preset not in PRESETS:
        raise LtxAneError(f"unknown transformer preset {preset!r} (choose from {', '.join(PRESETS)})")
    path = None
    dtypes: dict[str, str] = {}
    metadata: dict[str, str] = {}
    if not source.random_weights:
        if not source.checkpoint:
            raise LtxAneError("no transformer checkpoint given: pass a checkpoint (file or Hugging Face repo id) or --random-weights")
        path = resolve_checkpoint(source.checkpoint, wanted_prefix=TRANSFORMER_PREFIX)
        dtypes, metadata = safetensors_header(path)
        if not any(k.startswith(TRANSFORMER_PREFIX) and not is_text_connector(k[len(TRANSFORMER_PREFIX):]) for k in dtypes):
            raise LtxAneError(f"{path} holds no transformer (no tensors under '{TRANSFORMER_PREFIX}')")
    if source.config_file:
        return TransformerConfig.from_dict(load_config_file(source.config_file)), path
    if "config" in metadata:
        try:
            embedded = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise LtxAneError(f"{path}: the embedded config metadata is not valid JSON: {e}") from None
        return TransformerConfig.from_dict(embedded), path
    if path is not None:
        preset = _preset_for(dtypes)
        print(f"note: {path.name} embeds no config; using the {preset} transformer preset (--config overrides)", file=sys.stderr)
    return TransformerConfig.from_dict({"transformer": PRESETS[preset]}), path


def read_transformer_tensors(path: Path, dtype) -> dict[str, mx.array]:
    """The transformer's tensors under model names, lazily; fp8 ones dequantised to ``dtype``."""
    dtypes, _ = safetensors_header(path)
    scaled = [k for k in dtypes if k.startswith(TRANSFORMER_PREFIX) and k.endswith((".weight_scale", ".input_scale"))]
    if scaled:
        raise LtxAneError(
            f"{path} is a scaled-fp8 checkpoint ({scaled[0]}); only plain fp8 (cast) and bf16/fp16 files are supported"
        )
    tensors = load_tensors(path, {TRANSFORMER_PREFIX: ""}, ignore=is_text_connector)
    for name in tensors:
        if dtypes[TRANSFORMER_PREFIX + name] == FP8_DTYPE:
            tensors[name] = mx.from_fp8(tensors[name], dtype=dtype)
    return tensors


def randomize(model: LTXModel, dtype, seed: int) -> None:
    """Real-architecture random weights, block by block so at most one block exists in float32 at a time.

    Linear layers keep MLX's fan-in uniform init (drawn lazily when the model was built); the scale-shift tables,
    zeros at build time, get N(0, 1/dim) as ltx-core initialises them.
    """
    mx.random.seed(seed + 1)
    for module in (model, *model.transformer_blocks):
        for name, table in list(module.items()):
            if "scale_shift_table" in name and isinstance(table, mx.array):
                setattr(module, name, mx.random.normal(table.shape) * table.shape[-1] ** -0.5)
    model.set_dtype(dtype)
    for block in model.transformer_blocks:
        mx.eval(block.parameters())
    mx.eval(model.parameters())


def load_transformer(
    source: Source,
    dtype: str = "bf16",
    quantize: QuantizeMode | None = None,
    loras: Sequence[tuple[str | Path, float]] = (),
    seed: int = 0,
    preset: str = "ltx2",
) -> LTXModel:
    """The velocity model from ``source``; LoRAs (path, strength) fused at load, then optional quantisation.

    ``preset`` ("ltx2" or "ltx23") picks the architecture for random weights without a config file.
    """
    config, path = transformer_config(source, preset)
    compute_dtype = mlx_dtype(dtype)
    mx.random.seed(seed)
    model = LTXModel(config)  # parameters stay lazy (unevaluated) until weights are applied or randomised
    if quantize is not None:
        check_quantizable(model, quantize)
    if source.random_weights:
        if loras:
            raise LtxAneError("LoRAs cannot be fused into random weights")
        randomize(model, compute_dtype, seed)
    else:
        tensors = read_transformer_tensors(path, compute_dtype)
        fuse_loras(tensors, loras, compute_dtype)
        apply_weights(model, tensors, compute_dtype, source=f"{path} (transformer)")
    if quantize is not None:
        quantize_transformer(model, quantize)
    return model
