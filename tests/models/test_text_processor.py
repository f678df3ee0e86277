"""Feature extractors, connectors and the whole prompt path against ltx-core (and transformers' Gemma).

The LTX side is written as a real checkpoint (bf16, real key names, config metadata) at reduced widths and loaded
through ``load_embeddings_processor``; ltx-core's ``EmbeddingsProcessor`` gets the same rounded weights and the
full left-padded hidden states, MLX only the valid tokens' states.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

import mlx.core as mx  # noqa: E402

from ltx_ane.errors import LtxAneError  # noqa: E402
from ltx_ane.models.loading import Source  # noqa: E402
from ltx_ane.models.text.config import TextConfig  # noqa: E402
from ltx_ane.models.text.connector import frequency_grid  # noqa: E402
from ltx_ane.models.text.encoder import PromptEncoder  # noqa: E402
from ltx_ane.models.text.loader import load_embeddings_processor  # noqa: E402
from ltx_ane.reference import text as ref  # noqa: E402
from ltx_ane.reference import write_checkpoint  # noqa: E402

TOL = 1e-5  # fp32: max |mlx - ref| <= TOL * max |ref|
LENGTH = 1024
GEMMA_WIDTH, NUM_STATES = 32, 5
CONFIGS = {
    "v1": ref.TINY_V1_CONFIG,
    "v2": ref.TINY_V2_CONFIG,
    # ltx-core's defaults when the keys are absent: interleaved RoPE on a float32 grid (torch's vectorised
    # linspace rounds a few grid entries differently, hence the looser bound).
    "v1-interleaved-float32": {k: v for k, v in ref.TINY_V1_CONFIG.items()
                               if k not in ("rope_type", "frequencies_precision")},
}
CONFIG_TOL = {"v1": TOL, "v2": TOL, "v1-interleaved-float32": 1e-4}


def relative_error(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def random_states(seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, LENGTH, GEMMA_WIDTH, generator=g) * (1 + i) for i in range(NUM_STATES))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_processor_matches_ltx_core(tmp_path, name):
    config = CONFIGS[name]
    path = tmp_path / "ltx.safetensors"
    reference = ref.write_text_checkpoint(path, config, GEMMA_WIDTH, NUM_STATES)
    processor = load_embeddings_processor(Source(checkpoint=str(path)), GEMMA_WIDTH, NUM_STATES, "fp32")
    assert processor.config.feature_extractor == name[:2]
    for num_valid in (1, 37, LENGTH):
        states = random_states(num_valid)
        mask = np.zeros((1, LENGTH), np.int64)
        mask[:, LENGTH - num_valid:] = 1
        want_video, want_audio = ref.reference_contexts(reference, states, mask)
        video, audio = processor([mx.array(s.numpy()[:, LENGTH - num_valid:]) for s in states], LENGTH)
        assert video.shape == want_video.shape and audio.shape == want_audio.shape
        assert relative_error(video, want_video) <= CONFIG_TOL[name]
        assert relative_error(audio, want_audio) <= CONFIG_TOL[name]


def test_float64_frequency_grid_is_exact():
    from ltx_core.model.transformer.rope import generate_freq_grid_np

    for inner in (64, 3840, 4096):
        want = generate_freq_grid_np(10000.0, 1, inner).numpy()
        assert np.array_equal(frequency_grid(10000.0, inner // 2, True), want)


def test_released_configs_give_the_released_widths():
    import json
    from pathlib import Path

    configs = Path("/work/shared/configs")
    if not configs.is_dir():
        pytest.skip("the released configs are not on this machine")
    ltx2 = TextConfig.from_ltx_config(json.loads((configs / "ltx2_19b_config.json").read_text()), "19B")
    ltx23 = TextConfig.from_ltx_config(json.loads((configs / "ltx23_22b_config.json").read_text()), "2.3")
    assert (ltx2.feature_extractor, ltx2.projection_widths()) == ("v1", (3840, 3840))
    assert (ltx2.video_connector.num_layers, ltx2.audio_connector.inner_dim) == (2, 3840)
    assert (ltx23.feature_extractor, ltx23.projection_widths()) == ("v2", (4096, 2048))
    assert ltx23.video_connector.gated_attention and ltx23.video_connector.num_layers == 8


@pytest.mark.parametrize("valid_tokens_only", [True, False])
def test_prompt_encoder_end_to_end(tmp_path, valid_tokens_only):
    """Text -> tokenizer -> transformers' Gemma -> ltx-core's processor, against PromptEncoder from the files."""
    gemma, _ = ref.write_tiny_gemma(tmp_path / "gemma")
    reference = ref.write_text_checkpoint(tmp_path / "ltx.safetensors", ref.TINY_V1_CONFIG, GEMMA_WIDTH,
                                          NUM_STATES)
    encoder = PromptEncoder.load(str(tmp_path / "gemma"), Source(checkpoint=str(tmp_path / "ltx.safetensors")),
                                 dtype="fp32", valid_tokens_only=valid_tokens_only)
    text = "  a red cat walks on the beach at sunset  "
    prompt = encoder.tokenizer(text)
    states = ref.gemma_hidden_states(gemma, prompt.ids, prompt.mask)
    want_video, want_audio = ref.reference_contexts(reference, states, prompt.mask)
    context = encoder.encode(text)
    assert context.num_tokens == 10 and context.video_context.shape == (1, LENGTH, 32)
    assert context.video_context.dtype == np.float32 and context.video_mask.all()
    assert relative_error(context.video_context, want_video) <= TOL
    assert relative_error(context.audio_context, want_audio) <= TOL


def test_checkpoint_without_text_projection_is_an_error(tmp_path):
    path = write_checkpoint(tmp_path / "vae_only.safetensors", {"vae.decoder.conv_in.weight": torch.zeros(2, 2)},
                            {"transformer": ref.TINY_V1_CONFIG})
    with pytest.raises(LtxAneError, match="holds no text projection"):
        load_embeddings_processor(Source(checkpoint=str(path)), GEMMA_WIDTH, NUM_STATES)


def test_gemma_of_the_wrong_width_is_an_error(tmp_path):
    path = tmp_path / "ltx.safetensors"
    ref.write_text_checkpoint(path, ref.TINY_V1_CONFIG, GEMMA_WIDTH, NUM_STATES)
    with pytest.raises(LtxAneError, match="is --gemma the text encoder of this checkpoint"):
        load_embeddings_processor(Source(checkpoint=str(path)), 48, NUM_STATES)


def test_partial_v2_config_is_an_error():
    partial = {**ref.TINY_V1_CONFIG, "caption_proj_before_connector": True}
    with pytest.raises(LtxAneError, match="partial LTX-2.3 text projection config"):
        TextConfig.from_transformer_config(partial)
