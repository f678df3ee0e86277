"""The LTX side of text conditioning from an LTX checkpoint (or at random), with the config it carries.

The tensors live in the full LTX checkpoint, not in Gemma's files, under the same prefixes ltx-core's
``EMBEDDINGS_PROCESSOR_KEY_OPS`` maps: ``text_embedding_projection.*`` (feature extractor) and
``model.diffusion_model.{video,audio}_embeddings_connector.*``.
Config precedence: ``--config`` (a JSON file with a ``transformer`` section, or a preset name), else the
checkpoint's embedded metadata, else the preset its tensors point to (LTX-2 19B for random weights).
"""

from __future__ import annotations

from pathlib import Path

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import read_header
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import KeyOps, Source, load_into_mlx, mlx_dtype, randomize, resolve_config
from ltx_ane.models.text.config import TextConfig

PROJECTION_PREFIX = "text_embedding_projection."
VIDEO_CONNECTOR_PREFIX = "model.diffusion_model.video_embeddings_connector."
AUDIO_CONNECTOR_PREFIX = "model.diffusion_model.audio_embeddings_connector."
# LTX-2.3's feature extractor (V2) projects video and audio separately.
V2_PROJECTION_KEY = f"{PROJECTION_PREFIX}video_aggregate_embed.weight"
TEXT_KEYS = KeyOps(
    renames=(
        (PROJECTION_PREFIX, "feature_extractor."),
        (VIDEO_CONNECTOR_PREFIX, "video_connector."),
        (AUDIO_CONNECTOR_PREFIX, "audio_connector."),
    ),
    required=PROJECTION_PREFIX,
)


def _check_text_tensors(path: Path) -> None:
    header = read_header(path)
    for prefix, what in ((PROJECTION_PREFIX, "text projection"), (VIDEO_CONNECTOR_PREFIX, "video connector"),
                         (AUDIO_CONNECTOR_PREFIX, "audio connector")):
        if not header.keys_under(prefix):
            raise LtxAneError(f"{path} holds no {what} (no tensors under '{prefix}'); pass the full LTX-2 checkpoint")


def _preset_for(path: Path | None) -> dict:
    """The preset a file without embedded config points to (checked first, so that a file without the text
    tensors is one error, not a note about presets and then the error)."""
    if path is None:
        return load_preset("ltx2")
    _check_text_tensors(path)
    return load_preset("ltx23" if V2_PROJECTION_KEY in read_header(path).tensors else "ltx2")


def text_config(source: Source) -> tuple[TextConfig, Path | None]:
    """The text config for a source and, unless random, the resolved checkpoint holding the text projection."""
    raw, path = resolve_config(source, PROJECTION_PREFIX, _preset_for, section="transformer")
    if path is not None:
        _check_text_tensors(path)
    return TextConfig.from_ltx_config(raw, str(path or source.config_file or "the config")), path


def load_embeddings_processor(source: Source, gemma_width: int, num_states: int, dtype: str = "bf16",
                              seed: int = 0):
    """The feature extractor and connectors for a Gemma of ``gemma_width`` with ``num_states`` hidden states."""
    from ltx_ane.models.text.processor import EmbeddingsProcessor

    config, path = text_config(source)
    model = EmbeddingsProcessor(config, gemma_width, num_states)
    if source.random_weights:
        randomize(model, mlx_dtype(dtype), seed)
        return model
    expected_in = gemma_width * num_states
    header = read_header(path)
    for key in header.keys_under(PROJECTION_PREFIX):
        shape = header.tensors[key].shape
        if key.endswith("aggregate_embed.weight") and shape[1] != expected_in:
            raise LtxAneError(f"{path}: {key} takes {shape[1]} inputs but the Gemma model gives {num_states} states "
                              f"x {gemma_width} = {expected_in}; is --gemma the text encoder of this checkpoint?")
    load_into_mlx(model, path, TEXT_KEYS, mlx_dtype(dtype), "text projection and connectors")
    return model
