"""ltx-core's audio VAE and vocoders with deterministic random weights, and their checkpoint keys.

For parity tests and benchmarks only. The keys are those of the full LTX checkpoints: ``audio_vae.decoder.*``,
``audio_vae.encoder.*``, ``audio_vae.per_channel_statistics.*`` and ``vocoder.*`` (LTX-2.3:
``vocoder.vocoder.*``, ``vocoder.bwe_generator.*``, ``vocoder.mel_stft.*``), buffers such as the
anti-aliasing filters included, as ltx-core's loader needs them.
"""

from __future__ import annotations

from pathlib import Path

from ltx_ane.reference import load_checkpoint_into, randomize_parameters, randomize_statistics, require_reference

DECODER_PREFIXES = {"audio_vae.decoder.": "", "audio_vae.per_channel_statistics.": "per_channel_statistics."}
ENCODER_PREFIXES = {"audio_vae.encoder.": "", "audio_vae.per_channel_statistics.": "per_channel_statistics."}
VOCODER_PREFIXES = {"vocoder.": ""}


def build_audio_decoder(config: dict, seed: int = 0):
    return _random_audio_vae_part("AudioDecoderConfigurator", config, seed + 10)


def build_audio_encoder(config: dict, seed: int = 0):
    return _random_audio_vae_part("AudioEncoderConfigurator", config, seed + 11)


def _random_audio_vae_part(configurator_name: str, config: dict, seed: int):
    """An ltx-core audio VAE half with random weights and plausible latent statistics."""
    require_reference()
    import torch
    from ltx_core.model import audio_vae

    generator = torch.Generator().manual_seed(seed)
    model = getattr(audio_vae, configurator_name).from_config(config).eval()
    randomize_parameters(model, generator)
    randomize_statistics(model, generator)
    return model


def build_vocoder(config: dict, seed: int = 0):
    """A ``Vocoder`` or ``VocoderWithBWE``; the BWE's STFT and mel bases (zeros in ltx-core) get real values."""
    require_reference()
    import torch
    from ltx_core.model.audio_vae import VocoderConfigurator

    from ltx_ane.models.audio_vae.config import VocoderConfig
    from ltx_ane.models.audio_vae.vocoder import default_stft_bases

    generator = torch.Generator().manual_seed(seed + 12)
    model = VocoderConfigurator.from_config(config).eval()
    randomize_parameters(model, generator)
    bwe = VocoderConfig.from_dict(config).bwe
    if bwe is not None:
        basis, bank = default_stft_bases(bwe)
        stft = model.mel_stft.stft_fn
        stft.get_buffer("forward_basis").copy_(torch.from_numpy(basis))
        stft.get_buffer("inverse_basis").copy_(torch.from_numpy(basis))
        model.mel_stft.get_buffer("mel_basis").copy_(torch.from_numpy(bank))
    return model


def audio_state_dict(decoder=None, encoder=None, vocoder=None) -> dict:
    """The modules' tensors under the full checkpoint's names, the latent statistics once."""
    out = {}
    for prefix, module in (("audio_vae.decoder.", decoder), ("audio_vae.encoder.", encoder), ("vocoder.", vocoder)):
        if module is None:
            continue
        for key, value in module.state_dict().items():
            if key.startswith("per_channel_statistics."):
                out["audio_vae." + key] = value
            else:
                out[prefix + key] = value
    return out


def reference_audio_decoder_from_checkpoint(path: str | Path, config: dict):
    model = build_audio_decoder(config)
    load_checkpoint_into(model, path, DECODER_PREFIXES)
    return model


def reference_audio_encoder_from_checkpoint(path: str | Path, config: dict):
    model = build_audio_encoder(config)
    load_checkpoint_into(model, path, ENCODER_PREFIXES)
    return model


def reference_vocoder_from_checkpoint(path: str | Path, config: dict):
    model = build_vocoder(config)
    load_checkpoint_into(model, path, VOCODER_PREFIXES)
    return model
