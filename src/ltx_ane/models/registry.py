"""The one registry of components that the runtime can place on a backend (MLX, ltx-core, Core ML).

Backends, the Core ML converter and rewrites, the bench, the FLOP counter and the command line read these specs
instead of keeping their own lists. Adding a component is one entry here plus its model family.

``io`` is the component's calling convention on host arrays, which every backend implements once:

- ``decode``: a normalized latent tile (B, f, h, w, C) -> pixels (B, 8(f-1)+1, 32h, 32w, 3) in [-1, 1];
- ``encode``: pixels (B, F, H, W, 3) -> a normalized latent (B, f, h, w, C);
- ``upsample``: a whole normalized latent (B, C, F, h, w) -> its x2 upsampled form, wrapped in the VAE's
  statistics (the upscalers' GroupNorm spans every frame, so they are never tiled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ltx_ane.errors import LtxAneError


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    title: str
    family: str  # the models/<family> package
    io: str  # decode | encode | upsample (see the module doc)
    weights_flag: str  # the command-line flag that names its checkpoint
    resolve: Callable  # Source -> (raw config dict, checkpoint path or None)
    config: Callable  # raw config dict -> the family's config dataclass
    load: Callable  # (Source, dtype, seed) -> the MLX model
    reference: Callable  # (raw config, seed) -> the ltx-core module with random weights
    checkpoint_keys: Callable  # raw config -> KeyOps for this component's tensors

    @property
    def tiled(self) -> bool:
        """Whether the runtime cuts its input into tiles (the VAE) or runs the whole clip (the upscalers)."""
        return self.io != "upsample"

    def input_shape(self, raw: dict, tile: tuple[int, int, int]) -> tuple[int, ...]:
        """The (B, C, F, H, W) input of one call for a tile in latent units [F, h, w]."""
        cfg = self.config(raw)
        f, h, w = tile
        if self.io == "encode":
            return (1, cfg.in_channels, (f - 1) * cfg.time_scale + 1, h * cfg.space_scale, w * cfg.space_scale)
        return (1, cfg.latent_channels if self.io == "decode" else cfg.in_channels, f, h, w)


def _vae(part: str):
    def resolve(source):
        from ltx_ane.models.video_vae.loader import vae_config

        return vae_config(source)

    def config(raw):
        from ltx_ane.models.video_vae.config import DecoderConfig, EncoderConfig

        return (DecoderConfig if part == "decoder" else EncoderConfig).from_dict(raw)

    def load(source, dtype="bf16", seed=0):
        from ltx_ane.models.video_vae import loader

        return (loader.load_decoder if part == "decoder" else loader.load_encoder)(source, dtype, seed)

    def reference(raw, seed=0):
        from ltx_ane.reference import video_vae as RV

        return (RV.build_decoder if part == "decoder" else RV.build_encoder)(raw, seed)

    def keys(raw):
        from ltx_ane.models.video_vae.loader import vae_keys

        return vae_keys(part)

    return dict(resolve=resolve, config=config, load=load, reference=reference, checkpoint_keys=keys)


def _upscaler(kind: str):
    def resolve(source) -> tuple[dict, Path | None]:
        from ltx_ane.models.upscaler.loader import upscaler_config

        cfg, path = upscaler_config(source, kind)
        return cfg.raw, path

    def config(raw):
        from ltx_ane.models.upscaler.config import UpsamplerConfig

        return UpsamplerConfig.from_dict(raw)

    def load(source, dtype="bf16", seed=0):
        from ltx_ane.models.upscaler.loader import load_upscaler

        return load_upscaler(source, dtype, expected_kind=kind, seed=seed)

    def reference(raw, seed=0):
        from ltx_ane.reference import upscaler as RU

        return RU.build_upscaler(raw, seed)

    def keys(raw):
        from ltx_ane.models.upscaler.loader import upscaler_keys
        from ltx_ane.models.upscaler.model import BLUR_KERNEL_KEY

        return upscaler_keys(BLUR_KERNEL_KEY if raw.get("rational_resampler") else None)

    return dict(resolve=resolve, config=config, load=load, reference=reference, checkpoint_keys=keys)


COMPONENTS: dict[str, ComponentSpec] = {
    spec.name: spec
    for spec in (
        ComponentSpec("decoder", "VAE decoder", "video_vae", "decode", "--vae", **_vae("decoder")),
        ComponentSpec("encoder", "VAE encoder", "video_vae", "encode", "--vae", **_vae("encoder")),
        ComponentSpec("spatial", "spatial x2 upscaler", "upscaler", "upsample", "--spatial-upscaler", **_upscaler("spatial")),
        ComponentSpec("temporal", "temporal x2 upscaler", "upscaler", "upsample", "--temporal-upscaler", **_upscaler("temporal")),
    )
}
NAMES = tuple(COMPONENTS)
TILED = tuple(name for name, spec in COMPONENTS.items() if spec.tiled)


def spec(name: str) -> ComponentSpec:
    try:
        return COMPONENTS[name]
    except KeyError:
        raise LtxAneError(f"unknown component {name!r} (choose from {', '.join(NAMES)})") from None
