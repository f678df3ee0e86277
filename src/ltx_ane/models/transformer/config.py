"""The transformer's config, read from the ``transformer`` section of a checkpoint's embedded config.

Absent keys take the defaults of ltx-core 1.0.0's ``LTXModelConfigurator``; the keys it pins to one value are
checked the same way, so a config this class accepts builds the same model in the reference. Note the code default
of ``av_ca_timestep_scale_multiplier`` is 1 while the released files say 1000: it must come from the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx_ane.errors import LtxAneError

ROPE_TYPES = ("interleaved", "split")

# Keys ltx-core's configurator requires to hold exactly these values (it raises otherwise).
PINNED_VALUES = {
    "dropout": 0.0,
    "attention_bias": True,
    "num_vector_embeds": None,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
}


@dataclass(frozen=True)
class TransformerConfig:
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    in_channels: int = 128
    out_channels: int = 128
    num_layers: int = 48
    cross_attention_dim: int = 4096
    norm_eps: float = 1e-6
    positional_embedding_theta: float = 10000.0
    positional_embedding_max_pos: tuple[int, ...] = (20, 2048, 2048)
    timestep_scale_multiplier: float = 1000
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    audio_in_channels: int = 128
    audio_out_channels: int = 128
    audio_cross_attention_dim: int = 2048
    audio_positional_embedding_max_pos: tuple[int, ...] = (20,)
    av_ca_timestep_scale_multiplier: float = 1
    rope_type: str = "interleaved"
    double_precision_rope: bool = False
    apply_gated_attention: bool = False
    cross_attention_adaln: bool = False
    # 19B projects the text features inside the transformer; LTX-2.3 does it in the text encoder, before the connector.
    caption_proj_before_connector: bool = False
    caption_channels: int | None = None

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def has_caption_projection(self) -> bool:
        return not self.caption_proj_before_connector

    @property
    def adaln_coefficient(self) -> int:
        """AdaLN parameters per block: shift/scale/gate for self-attention and FFN, plus 3 for text cross-attention."""
        return 9 if self.cross_attention_adaln else 6

    @property
    def cross_pe_max_pos(self) -> int:
        return max(self.positional_embedding_max_pos[0], self.audio_positional_embedding_max_pos[0])

    @classmethod
    def from_dict(cls, full_config: dict) -> "TransformerConfig":
        """Build from a checkpoint's whole embedded config (its ``transformer`` section)."""
        if not isinstance(full_config, dict) or not isinstance(full_config.get("transformer"), dict):
            raise LtxAneError("the config has no 'transformer' section (is this an LTX-2 model checkpoint?)")
        raw = full_config["transformer"]
        for key, expected in PINNED_VALUES.items():
            if raw.get(key) != expected:
                raise LtxAneError(f"config key transformer.{key} is {raw.get(key)!r}; only {expected!r} is supported")
        rope_type = raw.get("rope_type", "interleaved")
        if rope_type not in ROPE_TYPES:
            raise LtxAneError(f"config key transformer.rope_type is {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")
        known = set(cls.__dataclass_fields__)
        values = {k: raw[k] for k in known if k in raw}
        for key in ("positional_embedding_max_pos", "audio_positional_embedding_max_pos"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        values["rope_type"] = rope_type
        values["double_precision_rope"] = raw.get("frequencies_precision", False) == "float64"
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if len(self.positional_embedding_max_pos) != 3 or len(self.audio_positional_embedding_max_pos) != 1:
            raise LtxAneError("config: video positions need 3 max_pos values (t, h, w) and audio positions 1")
        # The cross-modal RoPE is split by each modality's own head count but used by attention with the audio
        # head count and width; ltx-core only works when these agree.
        if self.num_attention_heads != self.audio_num_attention_heads:
            raise LtxAneError(
                f"config: num_attention_heads ({self.num_attention_heads}) must equal audio_num_attention_heads "
                f"({self.audio_num_attention_heads})"
            )
        if self.audio_cross_attention_dim != self.audio_inner_dim:
            raise LtxAneError(
                f"config: audio_cross_attention_dim ({self.audio_cross_attention_dim}) must equal audio heads x head "
                f"dim ({self.audio_inner_dim})"
            )
        if self.has_caption_projection and not self.caption_channels:
            raise LtxAneError("config: caption_channels is needed when the caption projection is in the transformer")
