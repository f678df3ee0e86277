"""The LTX side of text conditioning, configured from a checkpoint's ``transformer`` config section.

Absent keys take ltx-core 1.0.0's defaults (``Embeddings1DConnectorConfigurator`` and
``AudioEmbeddings1DConnectorConfigurator``; ``_create_feature_extractor`` picks V1 or V2), so a config means here
what it means to the reference. ltx-core hard-codes Gemma 3 12B's width (3840 x 49 states); here the width comes
from the Gemma model actually loaded, so reduced-width tests and the tiny random Gemma use the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx_ane.errors import LtxAneError

ROPE_TYPES = ("interleaved", "split")
# Keys whose presence marks LTX-2.3's feature extractor (V2), with the only values ltx-core 1.0.0 accepts.
V2_EXPECTED = {
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_projection_second_linear": False,
    "caption_proj_input_norm": False,
}

@dataclass(frozen=True)
class ConnectorConfig:
    heads: int = 30
    head_dim: int = 128
    num_layers: int = 2
    num_registers: int = 128
    max_pos: tuple[int, ...] = (1,)
    theta: float = 10000.0
    rope_type: str = "interleaved"
    double_precision_rope: bool = False
    gated_attention: bool = False

    @property
    def inner_dim(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class TextConfig:
    """Feature extractor version and widths, and the two connectors."""

    feature_extractor: str  # "v1" (LTX-2 19B) or "v2" (LTX-2.3)
    video_connector: ConnectorConfig
    audio_connector: ConnectorConfig
    # V2 only: the video and audio aggregate_embed output widths (the transformer's inner widths).
    video_width: int | None = None
    audio_width: int | None = None

    @classmethod
    def from_transformer_config(cls, t: dict) -> "TextConfig":
        rope_type = _choice(t, "rope_type", "interleaved", ROPE_TYPES)
        shared = dict(
            num_registers=_int(t, "connector_num_learnable_registers", 128),
            max_pos=tuple(_int_list(t, "connector_positional_embedding_max_pos", [1])),
            rope_type=rope_type,
            double_precision_rope=t.get("frequencies_precision", False) == "float64",
            gated_attention=bool(t.get("connector_apply_gated_attention", False)),
        )
        heads = _int(t, "connector_num_attention_heads", 30)
        head_dim = _int(t, "connector_attention_head_dim", 128)
        layers = _int(t, "connector_num_layers", 2)
        video = ConnectorConfig(heads=heads, head_dim=head_dim, num_layers=layers, **shared)
        audio = ConnectorConfig(
            heads=_int(t, "audio_connector_num_attention_heads", heads),
            head_dim=_int(t, "audio_connector_attention_head_dim", head_dim),
            num_layers=_int(t, "audio_connector_num_layers", layers),
            **shared,
        )
        if len(video.max_pos) != 1:
            raise LtxAneError("config key transformer.connector_positional_embedding_max_pos must hold one value")
        version = _feature_extractor_version(t)
        if version == "v1":
            return cls("v1", video, audio)
        video_width = _int(t, "num_attention_heads", None) * _int(t, "attention_head_dim", None)
        audio_width = _int(t, "audio_num_attention_heads", None) * _int(t, "audio_attention_head_dim", None)
        for name, width, connector in (("video", video_width, video), ("audio", audio_width, audio)):
            if width != connector.inner_dim:
                raise LtxAneError(f"config: the {name} text projection width {width} differs from the {name} "
                                  f"connector width {connector.inner_dim}")
        return cls("v2", video, audio, video_width=video_width, audio_width=audio_width)

    @classmethod
    def from_ltx_config(cls, config: dict, where: str) -> "TextConfig":
        transformer = config.get("transformer")
        if not isinstance(transformer, dict):
            raise LtxAneError(f"{where}: the config has no 'transformer' section (the text connectors are "
                              "configured there)")
        return cls.from_transformer_config(transformer)

    def projection_widths(self) -> tuple[int, int]:
        """The (video, audio) widths of the feature extractor's output.

        V1 projects to the connector width (3840 = Gemma 3 12B's width in LTX-2 19B, hard-coded in ltx-core) and
        feeds the same features to both connectors; V2 projects to each transformer width.
        """
        if self.feature_extractor == "v1":
            return self.video_connector.inner_dim, self.video_connector.inner_dim
        return self.video_width, self.audio_width

    def check_widths(self) -> None:
        video, audio = self.projection_widths()
        if (video, audio) != (self.video_connector.inner_dim, self.audio_connector.inner_dim):
            raise LtxAneError(
                f"config: the text connectors are {self.video_connector.inner_dim} (video) and "
                f"{self.audio_connector.inner_dim} (audio) wide but the text projection gives {video} and {audio}"
            )


def _feature_extractor_version(t: dict) -> str:
    present = t.keys() & V2_EXPECTED.keys()
    if not present:
        return "v1"
    missing = V2_EXPECTED.keys() - present
    if missing:
        raise LtxAneError("config: a partial LTX-2.3 text projection config, missing " + ", ".join(sorted(missing)))
    wrong = sorted(k for k in present if t[k] != V2_EXPECTED[k])
    if wrong:
        raise LtxAneError("config: unsupported text projection settings " +
                          ", ".join(f"{k}={t[k]!r} (expected {V2_EXPECTED[k]!r})" for k in wrong))
    return "v2"


def _int(t: dict, key: str, default: int | None) -> int:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LtxAneError(f"config key transformer.{key} must be a positive integer, got {value!r}")
    return value


def _int_list(t: dict, key: str, default: list[int]) -> list[int]:
    value = t.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, int) and v > 0 for v in value):
        raise LtxAneError(f"config key transformer.{key} must be a list of positive integers, got {value!r}")
    return value


def _choice(t: dict, key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = t.get(key, default)
    if value not in allowed:
        raise LtxAneError(f"config key transformer.{key} must be one of {', '.join(allowed)}, got {value!r}")
    return value
