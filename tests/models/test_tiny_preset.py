"""The ``tiny`` preset (the README's random-weights demo): every family builds from it with seeded random weights,
fits the pipeline's fixed shapes (128-channel video latents, 8 x 16 audio latents) and runs one forward."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ltx_ane.models.audio_vae.loader import load_audio_decoder, load_audio_encoder, load_vocoder
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from ltx_ane.models.text.gemma import MAX_TOKENS, RANDOM_GEMMA_TEXT_CONFIG
from ltx_ane.models.text.loader import load_embeddings_processor
from ltx_ane.models.transformer.loader import load_transformer
from ltx_ane.models.upscaler.loader import load_upscaler
from ltx_ane.models.video_vae.loader import load_decoder, load_encoder
from tests.models.transformer_util import make_inputs, run_mlx

TINY = Source(config_file="tiny", random_weights=True)
# The random Gemma's width and its hidden states (embeddings + one per layer), which the text projection takes.
GEMMA_WIDTH = RANDOM_GEMMA_TEXT_CONFIG["hidden_size"]
GEMMA_STATES = RANDOM_GEMMA_TEXT_CONFIG["num_hidden_layers"] + 1


def finite(x) -> bool:
    return bool(np.isfinite(np.array(x.astype(mx.float32))).all())


def test_text_contexts_are_as_wide_as_the_transformer_takes():
    processor = load_embeddings_processor(TINY, GEMMA_WIDTH, GEMMA_STATES, "fp32")
    states = [mx.random.normal((1, 5, GEMMA_WIDTH), key=mx.random.key(i)) for i in range(GEMMA_STATES)]
    video, audio = processor(states, MAX_TOKENS)
    caption_channels = load_preset("tiny")["transformer"]["caption_channels"]
    assert video.shape == audio.shape == (1, MAX_TOKENS, caption_channels)
    assert finite(video) and finite(audio)


def test_transformer_takes_the_pipeline_latents():
    config = load_preset("tiny")
    t = config["transformer"]
    assert t["in_channels"] == t["out_channels"] == t["audio_out_channels"] == 128
    model = load_transformer(TINY, "fp32")
    video, audio = make_inputs(config)
    video_out, audio_out = run_mlx(model, video, audio)
    assert video_out.shape == video.latent.shape and audio_out.shape == audio.latent.shape
    assert np.isfinite(video_out).all() and np.isfinite(audio_out).all()


def test_video_vae_and_upscaler_round_trip():
    decoder, encoder = load_decoder(TINY, "fp32"), load_encoder(TINY, "fp32")
    pixels = decoder(mx.zeros((1, 128, 2, 2, 3)))
    assert pixels.shape == (1, 3, 9, 64, 96) and finite(pixels)
    assert encoder(pixels).shape == (1, 128, 2, 2, 3)
    upscaler = load_upscaler(Source(random_weights=True, config=load_preset("tiny")["spatial_upscaler"]), "fp32",
                             "spatial")
    upsampled = upscaler(mx.zeros((1, 128, 2, 2, 3)))
    assert upsampled.shape == (1, 128, 2, 4, 6) and finite(upsampled)


def test_audio_vae_and_vocoder():
    decoder, encoder, vocoder = (load(TINY, "fp32") for load in (load_audio_decoder, load_audio_encoder, load_vocoder))
    mel = decoder(mx.zeros((1, 8, 2, 16)))
    assert mel.shape == (1, 2, 5, 64) and finite(mel)
    assert encoder(mel).shape[1:] == (8, 2, 16)
    waveform = vocoder(mel)
    assert waveform.shape == (1, 2, 5 * 240) and finite(waveform)


def test_random_weights_follow_the_seed():
    a, b, c = (load_audio_decoder(TINY, "fp32", seed=s) for s in (0, 0, 1))
    weight = lambda m: np.array(m.conv_in.conv.weight)  # noqa: E731
    assert np.array_equal(weight(a), weight(b)) and not np.array_equal(weight(a), weight(c))


def test_random_text_registers_at_the_released_scale():
    """The registers pad every prompt to 1,024 tokens, so they must be as large as the released init's
    uniform [-1, 1], not a fan-in scale (1/8 at this width)."""
    processor = load_embeddings_processor(TINY, GEMMA_WIDTH, GEMMA_STATES, "fp32")
    registers = np.array(processor.video_connector.learnable_registers)
    assert np.abs(registers).max() <= 1 and np.abs(registers).max() > 0.9
