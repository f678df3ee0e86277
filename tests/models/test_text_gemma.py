"""Gemma 3 through mlx-lm against transformers' ``Gemma3ForConditionalGeneration`` as ltx-core calls it.

A tiny random Gemma (4 layers, local/global pattern 2, sliding window 6 < 16 tokens, hidden 32 so sqrt(hidden) is
not exact in any dtype) is saved as a released Hugging Face directory and loaded through ``load_gemma``. All states
are compared on the valid (non-padded) rows: padded rows are never read downstream.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

from ltx_ane.errors import LtxAneError  # noqa: E402
from ltx_ane.models.text.gemma import (  # noqa: E402
    MAX_TOKENS,
    PromptTokenizer,
    StandInTokenizer,
    TokenizedPrompt,
    load_gemma,
    random_gemma,
)
from ltx_ane.reference import text as ref  # noqa: E402

TOL = 1e-5  # fp32: max |mlx - ref| <= TOL * max |ref|, per state
LENGTH = 16


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gemma")
    model, config = ref.write_tiny_gemma(directory)
    mlx_model, tokenizer, _ = load_gemma(str(directory), "fp32")
    return model, mlx_model, tokenizer, directory


def padded_prompt(num_padding: int, seed: int) -> TokenizedPrompt:
    ids = np.random.default_rng(seed).integers(4, 60, (1, LENGTH)).astype(np.int32)
    mask = np.ones((1, LENGTH), np.int32)
    ids[:, :num_padding] = 0
    mask[:, :num_padding] = 0
    return TokenizedPrompt(ids, mask)


def relative_errors(states, reference, num_padding: int) -> list[float]:
    out = []
    for got, want in zip(states, reference, strict=True):
        want = want.numpy()[:, num_padding:]
        out.append(float(np.abs(np.array(got)[:, -want.shape[1]:] - want).max() / np.abs(want).max()))
    return out


@pytest.mark.parametrize("num_padding", [0, 5, 11])
def test_all_hidden_states_match_transformers(gemma, num_padding):
    model, mlx_model, _, _ = gemma
    prompt = padded_prompt(num_padding, seed=num_padding)
    reference = ref.gemma_hidden_states(model, prompt.ids, prompt.mask)
    states = mlx_model.hidden_states(prompt.ids, prompt.mask)
    assert len(states) == len(reference) == mlx_model.num_states == 5
    assert max(relative_errors(states, reference, num_padding)) <= TOL


def test_last_state_is_after_the_final_norm(gemma):
    model, mlx_model, _, _ = gemma
    prompt = padded_prompt(3, seed=1)
    with torch.no_grad():
        last = model.model(input_ids=torch.as_tensor(prompt.ids, dtype=torch.long),
                           attention_mask=torch.as_tensor(prompt.mask, dtype=torch.long)).last_hidden_state
    states = mlx_model.hidden_states(prompt.ids, prompt.mask)
    assert relative_errors(states[-1:], [last], 3)[0] <= TOL


@pytest.mark.parametrize("num_padding", [2, 11])
def test_valid_tokens_only_matches_the_padded_run(gemma, num_padding):
    model, mlx_model, _, _ = gemma
    prompt = padded_prompt(num_padding, seed=7)
    padded = mlx_model.valid_states(prompt, valid_tokens_only=False)
    alone = mlx_model.valid_states(prompt, valid_tokens_only=True)
    for a, b in zip(alone, padded, strict=True):
        assert a.shape == b.shape == (1, LENGTH - num_padding, 32)
        assert float(np.abs(np.array(a) - np.array(b)).max()) <= TOL * float(np.abs(np.array(b)).max())


def test_transformers5_config_form_loads_the_same(gemma, tmp_path):
    """``save_pretrained``'s own config (rope_parameters, layer_types) gives the same model as the release form."""
    model, mlx_model, _, _ = gemma
    model.save_pretrained(tmp_path)
    ref.save_tiny_tokenizer(tmp_path)
    assert "rope_parameters" in json.loads((tmp_path / "config.json").read_text())["text_config"]
    other, _, _ = load_gemma(str(tmp_path), "fp32")
    prompt = padded_prompt(4, seed=3)
    reference = ref.gemma_hidden_states(model, prompt.ids, prompt.mask)
    assert max(relative_errors(other.hidden_states(prompt.ids, prompt.mask), reference, 4)) <= TOL


def test_tokenizer_follows_ltx_core(gemma):
    """Strip, left-pad to 1,024, truncate on the right: the same ids and mask as ltx-core's tokenizer."""
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    _, _, tokenizer, directory = gemma
    theirs = LTXVGemmaTokenizer(str(directory), MAX_TOKENS)
    long_text = " ".join(["a cat walks on the beach"] * 300)  # 1,500 words
    for text in ("  a red cat walks slowly  ", long_text):
        ours = tokenizer(text)
        pairs = theirs.tokenize_with_weights(text)["gemma"]
        assert ours.ids.shape == ours.mask.shape == (1, MAX_TOKENS)
        assert ours.ids[0].tolist() == [int(t) for t, _ in pairs]
        assert ours.mask[0].tolist() == [int(w) for _, w in pairs]
    short = tokenizer("  a red cat walks slowly  ")
    assert short.num_valid == 6 and short.ids[0, -6] == 2  # <bos> first, padding on the left
    truncated = tokenizer(long_text)
    assert truncated.num_valid == MAX_TOKENS and truncated.ids[0, 1] == 4  # kept the start: "a"


def test_real_gemma_tokenizer_pads_and_truncates_like_ltx_core():
    root = os.environ.get("GEMMA_ROOT")
    if not root:
        pytest.skip("set GEMMA_ROOT to a google/gemma-3-12b-it directory to test the real tokenizer")
    from pathlib import Path

    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

    ours = PromptTokenizer.from_dir(Path(root))
    theirs = LTXVGemmaTokenizer(str(Path(root)), MAX_TOKENS)
    for text in ("  A cat walks on the beach at sunset.  ", "word " * 2000):
        tokens = ours(text)
        pairs = theirs.tokenize_with_weights(text)["gemma"]
        assert tokens.ids[0].tolist() == [int(t) for t, _ in pairs]
        assert tokens.mask[0].tolist() == [int(w) for _, w in pairs]
    assert ours("word " * 2000).num_valid == MAX_TOKENS


def test_random_gemma_with_stand_in_tokenizer():
    model, tokenizer = random_gemma(seed=0, dtype="fp32")
    prompt = tokenizer("  héllo  ")
    assert tokenizer.stand_in
    assert prompt.num_valid == 1 + len("héllo".encode())
    assert prompt.ids[0, -prompt.num_valid] == StandInTokenizer.BOS and prompt.ids[0, 0] == StandInTokenizer.PAD
    states = model.valid_states(prompt)
    assert len(states) == model.num_states and states[0].shape == (1, prompt.num_valid, model.hidden_size)
    again, _ = random_gemma(seed=0, dtype="fp32")
    assert np.array_equal(np.array(again.valid_states(prompt)[-1]), np.array(states[-1]))
    assert np.isfinite(np.array(states[-1])).all()


def test_missing_directory_and_tokenizer_are_one_line_errors(gemma, tmp_path):
    with pytest.raises(LtxAneError, match="Gemma directory not found"):
        load_gemma(str(tmp_path / "nowhere"))
    _, _, _, directory = gemma
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).symlink_to(directory / name)
    with pytest.raises(LtxAneError, match="no Gemma tokenizer"):
        load_gemma(str(bare))


def test_empty_prompt_is_an_error(gemma):
    _, _, tokenizer, _ = gemma
    for tok in (tokenizer, StandInTokenizer()):
        with pytest.raises(LtxAneError, match="the prompt is empty"):
            tok("   \n ")
