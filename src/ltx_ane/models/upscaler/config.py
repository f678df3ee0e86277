"""Latent upscaler config, read from the top level of an upscaler file's config."""

from __future__ import annotations

from dataclasses import dataclass, field

from ltx_ane.errors import LtxAneError
from ltx_ane.models.config import positive_int as _positive_int

@dataclass(frozen=True)
class UpsamplerConfig:
    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    spatial_scale: float = 2.0
    rational_resampler: bool = False
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, config: dict) -> "UpsamplerConfig":
        if not isinstance(config, dict):
            raise LtxAneError("upscaler config must be a JSON object")
        if config.get("dims", 3) != 3:
            raise LtxAneError(f"config key dims: only 3-D upscalers are supported, got {config.get('dims')!r}")
        cfg = cls(
            in_channels=_positive_int(config, "in_channels", 128, prefix=""),
            mid_channels=_positive_int(config, "mid_channels", 512, prefix=""),
            num_blocks_per_stage=_positive_int(config, "num_blocks_per_stage", 4, prefix=""),
            spatial_upsample=bool(config.get("spatial_upsample", True)),
            temporal_upsample=bool(config.get("temporal_upsample", False)),
            spatial_scale=float(config.get("spatial_scale", 2.0)),
            rational_resampler=bool(config.get("rational_resampler", False)),
            raw=dict(config),
        )
        if cfg.mid_channels % 32:
            raise LtxAneError(f"config key mid_channels must be a multiple of 32 (GroupNorm groups), got {cfg.mid_channels}")
        if cfg.spatial_upsample == cfg.temporal_upsample:
            raise LtxAneError(
                "config keys spatial_upsample/temporal_upsample: exactly one must be true "
                "(spatio-temporal upscalers are not supported)"
            )
        if cfg.spatial_upsample and cfg.spatial_scale != 2.0:
            raise LtxAneError(f"config key spatial_scale: only 2.0 is supported, got {cfg.spatial_scale}")
        return cfg
