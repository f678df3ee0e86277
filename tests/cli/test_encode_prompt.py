"""``ltx-ane encode-prompt`` end to end through ``ltx_ane.cli.main.main``: the file, the cache, random weights,
and bad input. A tiny random Gemma directory and a reduced-width LTX text checkpoint stand in for the real ones;
the contexts are compared with ``PromptEncoder`` (itself tested against the reference in tests/models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("ltx_core")

from ltx_ane import __version__  # noqa: E402
from ltx_ane.cli.main import main  # noqa: E402
from ltx_ane.models.loading import Source  # noqa: E402
from ltx_ane.models.text.encoder import PromptEncoder  # noqa: E402
from ltx_ane.models.text.prompt_store import PromptCache, PromptContext, read_prompt_file  # noqa: E402
from ltx_ane.reference import text as ref  # noqa: E402
from ltx_ane.reference import write_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    ref.write_tiny_gemma(root / "gemma")
    ref.write_text_checkpoint(root / "ltx.safetensors", ref.TINY_V2_CONFIG, 32, 5)
    return root / "gemma", root / "ltx.safetensors"


def run(args, capsys) -> tuple[int, str, str]:
    code = main(["encode-prompt", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_contexts_and_metadata(models, tmp_path, capsys):
    gemma, ckpt = models
    out = tmp_path / "prompt.safetensors"
    code, stdout, _ = run(["  a cat walks on the beach ", "--negative", "blue snow", "--gemma", str(gemma),
                           "--checkpoint", str(ckpt), "--dtype", "fp32", "--cache-dir", str(tmp_path / "cache"),
                           "-o", str(out)], capsys)
    assert code == 0 and "wrote" in stdout
    saved = read_prompt_file(out)
    assert saved.positive.video_context.shape == (1, 1024, 64) and saved.positive.audio_context.shape == (1, 1024, 32)
    assert saved.negative is not None and (saved.positive.num_tokens, saved.negative.num_tokens) == (7, 3)
    meta = saved.metadata
    assert meta["prompt"] == "a cat walks on the beach" and meta["negative_prompt"] == "blue snow"
    assert meta["ltx_ane_version"] == __version__ and len(meta["gemma_hash"]) == len(meta["ltx_hash"]) == 64
    encoder = PromptEncoder.load(str(gemma), Source(checkpoint=str(ckpt)), dtype="fp32")
    for got, text in ((saved.positive, "a cat walks on the beach"), (saved.negative, "blue snow")):
        want = encoder.encode(text)
        np.testing.assert_allclose(got.video_context, want.video_context, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.audio_context, want.audio_context, rtol=0, atol=1e-6)
    assert not list(tmp_path.glob(".prompt.safetensors*"))  # no temporary file left behind


def test_cache_is_read_and_keyed_by_text(models, tmp_path, capsys):
    gemma, ckpt = models
    cache_dir = tmp_path / "cache"
    common = ["--gemma", str(gemma), "--checkpoint", str(ckpt), "--dtype", "fp32", "--cache-dir", str(cache_dir)]
    assert run(["a cat", *common, "-o", str(tmp_path / "1.safetensors")], capsys)[0] == 0
    (entry,) = cache_dir.glob("*.safetensors")
    # Replace the cached contexts with a marker: the next run must return it without encoding.
    marker = PromptContext(np.full((1, 1024, 64), 3.0, np.float32), np.full((1, 1024, 32), 4.0, np.float32), 2)
    cache = PromptCache(cache_dir)
    cache.put(entry.stem, marker, {"prompt": "a cat"})
    assert run([" a cat ", *common, "-o", str(tmp_path / "2.safetensors")], capsys)[0] == 0
    assert (read_prompt_file(tmp_path / "2.safetensors").positive.video_context == 3.0).all()
    assert run(["a dog", *common, "-o", str(tmp_path / "3.safetensors")], capsys)[0] == 0
    assert len(list(cache_dir.glob("*.safetensors"))) == 2
    assert run(["a cat", *common, "--no-cache", "-o", str(tmp_path / "4.safetensors")], capsys)[0] == 0
    fresh = read_prompt_file(tmp_path / "4.safetensors").positive.video_context
    np.testing.assert_array_equal(fresh, read_prompt_file(tmp_path / "1.safetensors").positive.video_context)


def test_cache_lives_under_the_project_cache_root(models, tmp_path, capsys, monkeypatch):
    gemma, ckpt = models
    monkeypatch.setenv("LTX_ANE_CACHE", str(tmp_path / "root"))
    args = ["a cat", "--gemma", str(gemma), "--checkpoint", str(ckpt), "--dtype", "fp32"]
    assert run([*args, "-o", str(tmp_path / "p.safetensors")], capsys)[0] == 0
    assert len(list((tmp_path / "root" / "prompts").glob("*.safetensors"))) == 1


def test_random_weights_need_no_download_and_say_so(tmp_path, capsys):
    config = tmp_path / "ltx.json"
    config.write_text(json.dumps({"transformer": ref.TINY_V1_CONFIG}))
    out = tmp_path / "random.safetensors"
    code, _, err = run(["a cat", "--random-weights", "--config", str(config), "--dtype", "fp32", "--no-cache",
                        "-o", str(out)], capsys)
    assert code == 0 and "stand-in byte tokenizer" in err and "random text projection" in err
    saved = read_prompt_file(out)
    assert saved.positive.video_context.shape == (1, 1024, 32) and saved.negative is None
    assert "stand-in" in saved.metadata["notes"] and saved.positive.num_tokens == 6


@pytest.mark.parametrize("case, message", [
    ("missing-gemma", "Gemma directory not found"),
    ("no-tokenizer", "no Gemma tokenizer"),
    ("no-projection", "holds no text projection"),
    ("empty-prompt", "the prompt is empty"),
    ("empty-negative", "the negative prompt is empty"),
    ("no-gemma", "no Gemma given"),
])
def test_bad_input_is_one_line(models, tmp_path, capsys, case, message):
    gemma, ckpt = models
    prompt, negative = "a cat", []
    if case == "missing-gemma":
        gemma = tmp_path / "nowhere"
    elif case == "no-tokenizer":
        gemma_copy = tmp_path / "gemma"
        gemma_copy.mkdir()
        for name in ("config.json", "model.safetensors"):
            (gemma_copy / name).symlink_to(gemma / name)
        gemma = gemma_copy
    elif case == "no-projection":
        import torch

        ckpt = write_checkpoint(tmp_path / "vae.safetensors", {"vae.decoder.x": torch.zeros(2)}, None)
    elif case == "empty-prompt":
        prompt = "  "
    elif case == "empty-negative":
        negative = ["--negative", ""]
    args = [prompt, *negative, "--checkpoint", str(ckpt), "--no-cache", "-o", str(tmp_path / "o.safetensors")]
    if case != "no-gemma":
        args += ["--gemma", str(gemma)]
    code, stdout, err = run(args, capsys)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "o.safetensors").exists()
