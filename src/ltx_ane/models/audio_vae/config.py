"""Audio VAE and vocoder configs, read from a checkpoint's ``audio_vae`` and ``vocoder`` sections.

Keys that are absent take the defaults of ltx-core 1.0.0's configurators (``AudioDecoderConfigurator``,
``AudioEncoderConfigurator``, ``VocoderConfigurator``), so a config means here what it means to the reference.
A ``vocoder`` section with a ``bwe`` entry is LTX-2.3's BigVGAN + bandwidth extension; without one it is
LTX-2's HiFi-GAN.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx_ane.errors import LtxAneError

# ltx-core's ``CausalityAxis`` values; null (no causal axis) is kept here as "none".
CAUSALITY_AXES = (None, "height", "width", "width-compatibility")
# ltx-core's mel-frames-per-latent-frame (``LATENT_DOWNSAMPLE_FACTOR``): two x2 stages in time.
LATENT_DOWNSAMPLE_FACTOR = 4


def _section(config: dict, key: str) -> dict:
    if not isinstance(config, dict) or not isinstance(config.get(key), dict):
        raise LtxAneError(f"the config has no '{key}' section")
    return config[key]


def _ints(value, key: str, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in value):
        raise LtxAneError(f"config key {key} must be a list of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise LtxAneError(f"config key {key} must have {length} entries, got {len(value)}")
    return tuple(value)


def _positive(value, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LtxAneError(f"config key {key} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class AudioVaeConfig:
    """The ``ddconfig`` of the audio VAE plus the mel front-end sizes it needs (decoder and encoder alike)."""

    ch: int = 128
    out_ch: int = 2
    in_channels: int = 2
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: frozenset[int] = frozenset({8, 16, 32})
    resolution: int = 256
    z_channels: int = 8
    double_z: bool = True
    causality_axis: str = "height"
    mid_block_add_attention: bool = True
    sample_rate: int = 16000
    mel_hop_length: int = 160
    n_fft: int = 1024
    mel_bins: int | None = 64

    @property
    def latent_mel_bins(self) -> int:
        # ltx-core sizes the latent statistics by ``ch`` and applies them to (channels x mel bins) per frame.
        return self.ch // self.z_channels

    def mel_frames(self, latent_frames: int) -> int:
        """Mel frames the decoder makes from ``latent_frames`` (ltx-core's target shape)."""
        frames = latent_frames * LATENT_DOWNSAMPLE_FACTOR
        return frames if self.causality_axis == "none" else max(frames - (LATENT_DOWNSAMPLE_FACTOR - 1), 1)

    @classmethod
    def from_dict(cls, config: dict) -> AudioVaeConfig:
        section = _section(config, "audio_vae")
        params = section.get("model", {}).get("params", {})
        dd = params.get("ddconfig", {})
        pre = section.get("preprocessing", {})
        stft, mel = pre.get("stft", {}), pre.get("mel", {})
        norm = dd.get("norm_type", "pixel")
        if norm != "pixel":
            raise LtxAneError(f"config key audio_vae ddconfig.norm_type: only 'pixel' is supported, got {norm!r}")
        axis = dd.get("causality_axis", "height")
        if axis not in CAUSALITY_AXES:
            raise LtxAneError(f"config key audio_vae ddconfig.causality_axis: unsupported value {axis!r}")
        if dd.get("attn_type", "vanilla") != "vanilla" or not dd.get("resamp_with_conv", True):
            raise LtxAneError("config key audio_vae ddconfig: only vanilla attention and conv resampling are supported")
        mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or section.get("variables", {}).get("mel_bins")
        cfg = cls(
            ch=_positive(dd.get("ch", 128), "audio_vae ddconfig.ch"),
            out_ch=_positive(dd.get("out_ch", 2), "audio_vae ddconfig.out_ch"),
            in_channels=_positive(dd.get("in_channels", 2), "audio_vae ddconfig.in_channels"),
            ch_mult=_ints(dd.get("ch_mult", (1, 2, 4)), "audio_vae ddconfig.ch_mult"),
            num_res_blocks=_positive(dd.get("num_res_blocks", 2), "audio_vae ddconfig.num_res_blocks"),
            attn_resolutions=frozenset(dd.get("attn_resolutions", (8, 16, 32))),
            resolution=_positive(dd.get("resolution", 256), "audio_vae ddconfig.resolution"),
            z_channels=_positive(dd.get("z_channels", 8), "audio_vae ddconfig.z_channels"),
            double_z=bool(dd.get("double_z", True)),
            causality_axis="none" if axis is None else axis,
            mid_block_add_attention=bool(dd.get("mid_block_add_attention", True)),
            sample_rate=_positive(params.get("sampling_rate", 16000), "audio_vae sampling_rate"),
            mel_hop_length=_positive(stft.get("hop_length", 160), "audio_vae stft.hop_length"),
            n_fft=_positive(stft.get("filter_length", 1024), "audio_vae stft.filter_length"),
            mel_bins=mel_bins,
        )
        if cfg.ch % cfg.z_channels:
            raise LtxAneError(f"config: audio_vae ch {cfg.ch} is not a multiple of z_channels {cfg.z_channels}")
        return cfg


@dataclass(frozen=True)
class GeneratorConfig:
    """One mel-to-waveform generator (ltx-core ``Vocoder``): HiFi-GAN (``resblock`` '1') or BigVGAN v2 ('AMP1')."""

    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    upsample_rates: tuple[int, ...] = (6, 5, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_initial_channel: int = 1024
    resblock: str = "1"
    output_sampling_rate: int = 24000
    use_tanh_at_final: bool = True
    apply_final_activation: bool = True
    use_bias_at_final: bool = True
    # ltx-core's generators are stereo: 2 channels x 64 mel bins in, 2 channels out.
    mel_bins: int = 64

    @property
    def is_amp(self) -> bool:
        return self.resblock == "AMP1"

    @classmethod
    def from_dict(cls, section: dict, key: str, resblock: str, apply_final_activation: bool = True,
                  output_sampling_rate: int | None = None) -> GeneratorConfig:
        if section.get("resblock") != resblock:
            raise LtxAneError(f"config key {key}.resblock: expected {resblock!r}, got {section.get('resblock')!r}")
        if section.get("stereo") is not True:
            raise LtxAneError(f"config key {key}.stereo: only stereo vocoders exist, got {section.get('stereo')!r}")
        if resblock == "AMP1" and section.get("activation") != "snakebeta":
            raise LtxAneError(f"config key {key}.activation: expected 'snakebeta', got {section.get('activation')!r}")
        rates = _ints(section.get("upsample_rates", cls.upsample_rates), f"{key}.upsample_rates")
        kernels = _ints(section.get("resblock_kernel_sizes", cls.resblock_kernel_sizes), f"{key}.resblock_kernel_sizes")
        dilations = section.get("resblock_dilation_sizes", cls.resblock_dilation_sizes)
        if not isinstance(dilations, (list, tuple)) or len(dilations) != len(kernels):
            raise LtxAneError(f"config key {key}.resblock_dilation_sizes must have one list per resblock kernel size")
        channels = _positive(section.get("upsample_initial_channel", 1024), f"{key}.upsample_initial_channel")
        if channels % 2 ** len(rates):
            raise LtxAneError(f"config key {key}.upsample_initial_channel: {channels} does not halve {len(rates)} times")
        return cls(
            resblock_kernel_sizes=kernels,
            upsample_rates=rates,
            upsample_kernel_sizes=_ints(section.get("upsample_kernel_sizes", cls.upsample_kernel_sizes),
                                        f"{key}.upsample_kernel_sizes", len(rates)),
            resblock_dilation_sizes=tuple(_ints(d, f"{key}.resblock_dilation_sizes", 3) for d in dilations),
            upsample_initial_channel=channels,
            resblock=resblock,
            output_sampling_rate=output_sampling_rate or section.get("output_sampling_rate", 24000),
            use_tanh_at_final=bool(section.get("use_tanh_at_final", True)),
            apply_final_activation=apply_final_activation,
            use_bias_at_final=bool(section.get("use_bias_at_final", True)),
        )


@dataclass(frozen=True)
class BweConfig:
    """LTX-2.3's bandwidth extension: a causal log-mel of the first waveform feeds a second generator."""

    generator: GeneratorConfig
    n_fft: int = 512
    hop_length: int = 80
    num_mels: int = 64
    input_sampling_rate: int = 16000
    output_sampling_rate: int = 48000


@dataclass(frozen=True)
class VocoderConfig:
    generator: GeneratorConfig
    bwe: BweConfig | None = None

    @property
    def output_sampling_rate(self) -> int:
        return self.bwe.output_sampling_rate if self.bwe else self.generator.output_sampling_rate

    @property
    def mel_bins(self) -> int:
        return self.generator.mel_bins

    @classmethod
    def from_dict(cls, config: dict) -> VocoderConfig:
        section = _section(config, "vocoder")
        if "bwe" not in section:
            return cls(GeneratorConfig.from_dict(section, "vocoder", "1"))
        bwe = section["bwe"]
        if not isinstance(bwe, dict) or not isinstance(section.get("vocoder"), dict):
            raise LtxAneError("config key vocoder: a 'bwe' vocoder needs 'vocoder' and 'bwe' objects")
        rate_in = _positive(bwe.get("input_sampling_rate"), "vocoder.bwe.input_sampling_rate")
        rate_out = _positive(bwe.get("output_sampling_rate"), "vocoder.bwe.output_sampling_rate")
        if rate_out % rate_in:
            raise LtxAneError(f"config key vocoder.bwe: {rate_out} Hz is not a whole multiple of {rate_in} Hz")
        num_mels = _positive(bwe.get("num_mels"), "vocoder.bwe.num_mels")
        if num_mels != GeneratorConfig.mel_bins:
            raise LtxAneError(f"config key vocoder.bwe.num_mels: the generators take {GeneratorConfig.mel_bins} mel bins, got {num_mels}")
        return cls(
            generator=GeneratorConfig.from_dict(section["vocoder"], "vocoder.vocoder", "AMP1", output_sampling_rate=rate_in),
            bwe=BweConfig(
                generator=GeneratorConfig.from_dict(bwe, "vocoder.bwe", "AMP1", apply_final_activation=False,
                                                    output_sampling_rate=rate_out),
                n_fft=_positive(bwe.get("n_fft"), "vocoder.bwe.n_fft"),
                hop_length=_positive(bwe.get("hop_length"), "vocoder.bwe.hop_length"),
                num_mels=num_mels,
                input_sampling_rate=rate_in,
                output_sampling_rate=rate_out,
            ),
        )
