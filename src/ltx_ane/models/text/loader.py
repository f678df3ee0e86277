"""The LTX side of text conditioning from an LTX checkpoint (or at random), with the config it carries.

The tensors live in the full LTX checkpoint, not in Gemma's files, under the same prefixes ltx-core's
``EMBEDDINGS_PROCESSOR_KEY_OPS`` maps: ``text_embedding_projection.*`` (feature extractor) and
``model.diffusion_model.{video,audio}_embeddings_connector.*``.
Config precedence: ``--config`` (a JSON file with a ``transformer`` section, or a preset name), else the
checkpoint's embedded metadata, else (random weights only) the LTX-2 19B preset.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import apply_weights, load_tensors, read_header, resolve_checkpoint
from ltx_ane.models.loading import Source, mlx_dtype
from ltx_ane.models.text.config import PRESETS, TextConfig

PROJECTION_PREFIX = "text_embedding_projection."
VIDEO_CONNECTOR_PREFIX = "model.diffusion_model.video_embeddings_connector."
AUDIO_CONNECTOR_PREFIX = "model.diffusion_model.audio_embeddings_connector."
PREFIX_MAP = {
    PROJECTION_PREFIX: "feature_extractor.",
    VIDEO_CONNECTOR_PREFIX: "video_connector.",
    AUDIO_CONNECTOR_PREFIX: "audio_connector.",
}


def text_config(source: Source) -> tuple[TextConfig, Path | None]:
    """The text config for a source and, unless random, the resolved checkpoint holding the text projection."""
    path = None
    if not source.random_weights:
        if not source.checkpoint:
            raise LtxAneError("no LTX checkpoint given: pass --checkpoint CKPT or --random-weights")
        path = resolve_checkpoint(source.checkpoint, wanted_prefix=PROJECTION_PREFIX)
        header = read_header(path)
        for prefix, what in ((PROJECTION_PREFIX, "text projection"), (VIDEO_CONNECTOR_PREFIX, "video connector"),
                             (AUDIO_CONNECTOR_PREFIX, "audio connector")):
            if not header.keys_under(prefix):
                raise LtxAneError(f"{path} holds no {what} (no tensors under '{prefix}'); pass the full LTX-2 "
                                  "checkpoint")
    if source.config_file:
        return _config_from_file(source.config_file), path
    if path is not None:
        embedded = read_header(path).config()
        if embedded is None:
            raise LtxAneError(f"{path.name} embeds no config; pass --config FILE or a preset ({', '.join(PRESETS)})")
        return TextConfig.from_ltx_config(embedded, str(path)), path
    return TextConfig.from_transformer_config(PRESETS["ltx2"]), None


def _config_from_file(spec: str) -> TextConfig:
    if spec in PRESETS:
        return TextConfig.from_transformer_config(PRESETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise LtxAneError(f"config not found: {spec} (a JSON file or a preset: {', '.join(PRESETS)})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LtxAneError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise LtxAneError(f"{path} is not a JSON object")
    return TextConfig.from_ltx_config(config, str(path))


def load_embeddings_processor(source: Source, gemma_width: int, num_states: int, dtype: str = "bf16",
                              seed: int = 0):
    """The feature extractor and connectors for a Gemma of ``gemma_width`` with ``num_states`` hidden states."""
    import mlx.core as mx

    from ltx_ane.models.text.processor import EmbeddingsProcessor

    config, path = text_config(source)
    model = EmbeddingsProcessor(config, gemma_width, num_states)
    if source.random_weights:
        mx.random.seed(seed)
        # Random registers at the released init's scale (uniform in [-1, 1]); layers keep MLX's default init.
        for connector in (model.video_connector, model.audio_connector):
            connector.learnable_registers = mx.random.uniform(-1, 1, connector.learnable_registers.shape)
        model.set_dtype(mlx_dtype(dtype))
        mx.eval(model.parameters())
        return model
    expected_in = gemma_width * num_states
    header = read_header(path)
    for key in header.keys_under(PROJECTION_PREFIX):
        shape = header.tensors[key].shape
        if key.endswith("aggregate_embed.weight") and shape[1] != expected_in:
            raise LtxAneError(f"{path}: {key} takes {shape[1]} inputs but the Gemma model gives {num_states} states "
                              f"x {gemma_width} = {expected_in}; is --gemma the text encoder of this checkpoint?")
    tensors = load_tensors(path, PREFIX_MAP)
    apply_weights(model, tensors, mlx_dtype(dtype), source=f"{path} (text projection and connectors)")
    return model
