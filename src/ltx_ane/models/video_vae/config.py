"""Video VAE decoder and encoder configs, read from the ``vae`` section of a checkpoint's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ltx_ane.errors import LtxAneError
from ltx_ane.models.config import choice as _choice
from ltx_ane.models.config import positive_int as _positive_int

DECODER_BLOCKS = ("res_x", "compress_time", "compress_space", "compress_all")
ENCODER_BLOCKS = (
    "res_x",
    "compress_time",
    "compress_space",
    "compress_all",
    "compress_time_res",
    "compress_space_res",
    "compress_all_res",
)
# (time, height, width) strides of the blocks that change the grid.
BLOCK_STRIDES = {
    "compress_time": (2, 1, 1),
    "compress_space": (1, 2, 2),
    "compress_all": (2, 2, 2),
}
PADDING_MODES = ("zeros", "reflect")
LOG_VAR_MODES = {"per_channel", "uniform", "constant", "none"}

@dataclass(frozen=True)
class Block:
    """One entry of a block list: its type and the parameters the reference reads for it."""

    name: str
    num_layers: int = 1
    multiplier: int = 1
    residual: bool = False

    @property
    def stride(self) -> tuple[int, int, int]:
        return BLOCK_STRIDES.get(self.name.removesuffix("_res"), (1, 1, 1))


def _blocks(raw: Any, allowed: tuple[str, ...], key: str, default_multiplier: int) -> tuple[Block, ...]:
    if not isinstance(raw, list):
        raise LtxAneError(f"config key vae.{key} must be a list of [name, params] pairs")
    blocks = []
    for i, entry in enumerate(raw):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise LtxAneError(f"config key vae.{key}[{i}] must be a [name, params] pair, got {entry!r}")
        name, params = entry
        if name not in allowed:
            raise LtxAneError(
                f"config key vae.{key}[{i}]: unsupported block type {name!r} (supported: {', '.join(allowed)})"
            )
        params = {"num_layers": params} if isinstance(params, int) else dict(params or {})
        if name == "res_x" and "num_layers" not in params:
            raise LtxAneError(f"config key vae.{key}[{i}]: res_x needs num_layers")
        if params.get("inject_noise", False):
            raise LtxAneError(f"config key vae.{key}[{i}].inject_noise: noise injection is not supported")
        blocks.append(
            Block(
                name=name,
                num_layers=int(params.get("num_layers", 1)),
                multiplier=int(params.get("multiplier", default_multiplier)),
                residual=bool(params.get("residual", False)),
            )
        )
    return tuple(blocks)


def _common_vae_checks(section: dict) -> None:
    if section.get("dims", 3) != 3:
        raise LtxAneError(f"config key vae.dims: only 3-D VAEs are supported, got {section.get('dims')!r}")
    _choice(section, "norm_layer", "pixel_norm", {"pixel_norm"})


class _GridScales:
    """Pixels per latent in time and space, from the block list's strides and the patch size."""

    @property
    def time_scale(self) -> int:
        return _prod(b.stride[0] for b in self.blocks)

    @property
    def space_scale(self) -> int:
        return self.patch_size * _prod(b.stride[1] for b in self.blocks)


@dataclass(frozen=True)
class DecoderConfig(_GridScales):
    latent_channels: int = 128
    out_channels: int = 3
    patch_size: int = 4
    base_channels: int = 128
    blocks: tuple[Block, ...] = ()
    causal: bool = False
    spatial_padding_mode: str = "reflect"
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def feature_channels(self) -> int:
        # ltx-core fixes the decoder's widest stage at 8x base channels (three x2 stages in LTX-2).
        return self.base_channels * 8

    @classmethod
    def from_dict(cls, config: dict) -> "DecoderConfig":
        section = _vae_section(config)
        _common_vae_checks(section)
        if section.get("timestep_conditioning", True):
            raise LtxAneError(
                "config key vae.timestep_conditioning: timestep-conditioned decoders are not supported "
                "(LTX-2 and LTX-2.3 set it to false; ltx-core's default when absent is true)"
            )
        cfg = cls(
            latent_channels=_positive_int(section, "latent_channels", 128),
            out_channels=_positive_int(section, "out_channels", 3),
            patch_size=_positive_int(section, "patch_size", 4),
            base_channels=_positive_int(section, "decoder_base_channels", 128),
            blocks=_blocks(section.get("decoder_blocks", []), DECODER_BLOCKS, "decoder_blocks", 1),
            causal=bool(section.get("causal_decoder", False)),
            spatial_padding_mode=_choice(section, "spatial_padding_mode", "reflect", PADDING_MODES),
            raw={"vae": section},
        )
        channels = cfg.feature_channels
        for i, block in enumerate(reversed(cfg.blocks)):
            if block.name != "res_x":
                if channels % block.multiplier:
                    raise LtxAneError(f"config key vae.decoder_blocks: {channels} channels do not divide by multiplier {block.multiplier}")
                channels //= block.multiplier
        if channels < 1:
            raise LtxAneError("config key vae.decoder_base_channels leaves no channels")
        return cfg


@dataclass(frozen=True)
class EncoderConfig(_GridScales):
    in_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4
    blocks: tuple[Block, ...] = ()
    latent_log_var: str = "uniform"
    spatial_padding_mode: str = "zeros"
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def out_conv_channels(self) -> int:
        c = self.latent_channels
        return {"per_channel": 2 * c, "uniform": c + 1, "constant": c + 1, "none": c}[self.latent_log_var]

    @classmethod
    def from_dict(cls, config: dict) -> "EncoderConfig":
        section = _vae_section(config)
        _common_vae_checks(section)
        cfg = cls(
            in_channels=_positive_int(section, "in_channels", 3),
            latent_channels=_positive_int(section, "latent_channels", 128),
            patch_size=_positive_int(section, "patch_size", 4),
            blocks=_blocks(section.get("encoder_blocks", []), ENCODER_BLOCKS, "encoder_blocks", 2),
            latent_log_var=_choice(section, "latent_log_var", "uniform", LOG_VAR_MODES),
            spatial_padding_mode=_choice(section, "spatial_padding_mode", "zeros", PADDING_MODES),
            raw={"vae": section},
        )
        channels = cfg.latent_channels
        for block in cfg.blocks:
            if block.name.endswith("_res"):
                out = channels * block.multiplier
                if out % _prod(block.stride) or (channels * _prod(block.stride)) % out:
                    raise LtxAneError(
                        f"config key vae.encoder_blocks: {block.name} with multiplier {block.multiplier} "
                        f"cannot map {channels} channels"
                    )
                channels = out
        return cfg


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _vae_section(config: dict) -> dict:
    if not isinstance(config, dict):
        raise LtxAneError("VAE config must be a JSON object")
    section = config.get("vae", config)
    if not isinstance(section, dict):
        raise LtxAneError("config key vae must be a JSON object")
    return section


