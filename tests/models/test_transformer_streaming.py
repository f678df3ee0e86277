"""Block streaming: a streamed transformer computes bit for bit what the resident one computes, holds one block's
weights at a time, and refuses what it cannot do with one line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from transformer_util import make_inputs, run_mlx, tiny_config, write_transformer  # noqa: E402
from ltx_ane import reference as R  # noqa: E402
from ltx_ane.errors import LtxAneError  # noqa: E402
from ltx_ane.models.loading import Source  # noqa: E402
from ltx_ane.models.transformer.loader import load_transformer  # noqa: E402
from ltx_ane.models.transformer.lora import fuse_loras_into  # noqa: E402
from ltx_ane.models.transformer.perturbations import (  # noqa: E402
    BatchedPerturbationConfig, Perturbation, PerturbationConfig, PerturbationType)
from ltx_ane.models.transformer.quantize import QuantizeMode  # noqa: E402
from ltx_ane.reference import transformer as RT  # noqa: E402

PREFIX = RT.TRANSFORMER_PREFIX


@pytest.fixture(scope="module", params=("ltx2", "ltx23"))
def checkpoint(request, tmp_path_factory):
    config = tiny_config(request.param, num_layers=3)
    path = tmp_path_factory.mktemp(request.param) / "ltx.safetensors"
    write_transformer(path, config)
    return config, path


def assert_identical(resident, streamed):
    for r, s in zip(resident, streamed):
        assert (r is None) == (s is None)
        if r is not None:
            assert np.array_equal(r, s)


def skip_self_attention(block: int) -> BatchedPerturbationConfig:
    """Item 0 untouched, item 1 with video and audio self-attention skipped in one block (STG)."""
    kinds = (PerturbationType.SKIP_VIDEO_SELF_ATTN, PerturbationType.SKIP_AUDIO_SELF_ATTN)
    return BatchedPerturbationConfig((PerturbationConfig(()),
                                      PerturbationConfig(tuple(Perturbation(k, (block,)) for k in kinds))))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_streamed_forward_is_the_resident_forward(checkpoint, dtype):
    config, path = checkpoint
    resident = load_transformer(Source(str(path)), dtype=dtype)
    streamed = load_transformer(Source(str(path)), dtype=dtype, stream_blocks=True)
    cast = mx.float32 if dtype == "fp32" else mx.bfloat16

    def run(model, video, audio, perturbations=None, prepared=False):
        v, a = (replace(m.mlx(), latent=m.mlx().latent.astype(cast)) for m in (video, audio))
        text = model.prepare_context(v.context, a.context) if prepared else None
        return tuple(np.array(o.astype(mx.float32)) for o in model(v, a, perturbations, text))

    video, audio = make_inputs(config, batch=2)
    for perturbations in (None, skip_self_attention(1)):
        for prepared in (False, True):
            assert_identical(run(resident, video, audio, perturbations, prepared),
                             run(streamed, video, audio, perturbations, prepared))


def test_streamed_peak_memory_holds_about_one_block(tmp_path):
    config = tiny_config("ltx2", num_layers=6)
    config["transformer"].update(attention_head_dim=64, cross_attention_dim=256)
    path = tmp_path / "ltx.safetensors"
    write_transformer(path, config)
    video, audio = make_inputs(config)

    def forward_peak(model) -> int:
        mx.reset_peak_memory()
        run_mlx(model, video, audio)
        return mx.get_peak_memory()

    resident = load_transformer(Source(str(path)), dtype="fp32")
    block_bytes = sum(p.nbytes for _, p in tree_flatten(resident.transformer_blocks[0].parameters()))
    resident_peak = forward_peak(resident)
    del resident
    streamed_peak = forward_peak(load_transformer(Source(str(path)), dtype="fp32", stream_blocks=True))
    # All but one block's weights, less one more block of margin for a block's load-time copies.
    assert streamed_peak <= resident_peak - 4 * block_bytes


def test_streamed_lora_fusion_is_the_resident_one(tmp_path):
    config = tiny_config("ltx2", num_layers=2)
    path = tmp_path / "ltx.safetensors"
    write_transformer(path, config)
    weights = load_file(str(path))
    g = torch.Generator().manual_seed(3)
    lora = {}
    for target in ("transformer_blocks.1.attn1.to_q", "transformer_blocks.0.ff.net.2", "patchify_proj"):
        out_features, in_features = weights[f"{PREFIX}{target}.weight"].shape
        lora[f"diffusion_model.{target}.lora_A.weight"] = torch.randn(2, in_features, generator=g) * 0.1
        lora[f"diffusion_model.{target}.lora_B.weight"] = torch.randn(out_features, 2, generator=g) * 0.1
    lora_path = R.write_checkpoint(tmp_path / "lora.safetensors", lora, None)
    loras = [(lora_path, 0.8)]
    video, audio = make_inputs(config)
    assert_identical(run_mlx(load_transformer(Source(str(path)), dtype="fp32", loras=loras), video, audio),
                     run_mlx(load_transformer(Source(str(path)), dtype="fp32", loras=loras, stream_blocks=True),
                             video, audio))


def test_fp8_blocks_are_dequantised_as_in_a_resident_load(tmp_path):
    config = tiny_config("ltx2", num_layers=2)
    path = tmp_path / "ltx.safetensors"
    write_transformer(path, config)
    fp8 = {k: (v.to(torch.float8_e4m3fn) if k.startswith(PREFIX) and v.ndim == 2 else v)
           for k, v in load_file(str(path)).items()}
    fp8_path = tmp_path / "fp8.safetensors"
    save_file(fp8, str(fp8_path), metadata={"config": json.dumps(config)})
    video, audio = make_inputs(config)
    assert_identical(run_mlx(load_transformer(Source(str(fp8_path)), dtype="fp32"), video, audio),
                     run_mlx(load_transformer(Source(str(fp8_path)), dtype="fp32", stream_blocks=True), video, audio))


def test_streamed_random_weights_are_drawn_again_identically(tmp_path):
    config = tiny_config("ltx23", num_layers=2)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    model = load_transformer(Source(config_file=str(config_file), random_weights=True), dtype="fp32", seed=5,
                             stream_blocks=True)
    video, audio = make_inputs(config)
    first = run_mlx(model, video, audio)
    assert np.isfinite(first[0]).all()
    assert_identical(first, run_mlx(model, video, audio))


def test_streaming_refuses_quantisation_late_loras_and_mismatched_blocks(tmp_path):
    config = tiny_config("ltx2", num_layers=2)
    path = tmp_path / "ltx.safetensors"
    write_transformer(path, config)
    with pytest.raises(LtxAneError, match="cannot be quantised"):
        load_transformer(Source(str(path)), quantize=QuantizeMode.parse("8"), stream_blocks=True)
    with pytest.raises(LtxAneError, match="streams its blocks; load it again with the LoRA"):
        fuse_loras_into(load_transformer(Source(str(path)), stream_blocks=True), [(path, 1.0)])
    tensors = load_file(str(path))
    del tensors[f"{PREFIX}transformer_blocks.1.ff.net.2.bias"]
    broken = R.write_checkpoint(tmp_path / "broken.safetensors", tensors, config)
    with pytest.raises(LtxAneError, match=r"1 missing \(e.g. transformer_blocks.1.ff.net.2.bias\)"):
        load_transformer(Source(str(broken)), stream_blocks=True)
