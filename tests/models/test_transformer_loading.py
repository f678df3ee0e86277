"""Loading the transformer: strict checks with one-line errors, fp8 files, random weights at the real architecture,
LoRA fusion against ltx-core's ``apply_loras``, and quantisation with its PSNR quality gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from transformer_util import FP32_TOL, make_inputs, rel_err, run_mlx, run_reference, tiny_config, write_transformer  # noqa: E402
from ltx_ane import reference as R  # noqa: E402
from ltx_ane.errors import LtxAneError  # noqa: E402
from ltx_ane.models.loading import Source  # noqa: E402
from ltx_ane.models.transformer.config import TransformerConfig  # noqa: E402
from ltx_ane.models.transformer.loader import load_transformer  # noqa: E402
from ltx_ane.models.transformer.model import LTXModel  # noqa: E402
from ltx_ane.models.config import load_preset  # noqa: E402
from ltx_ane.models.transformer.quantize import QuantizeMode, velocity_psnr  # noqa: E402
from ltx_ane.reference import transformer as RT  # noqa: E402

PREFIX = RT.TRANSFORMER_PREFIX


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = tiny_config("ltx2", num_layers=1)
    path = tmp_path_factory.mktemp("ckpt") / "ltx.safetensors"
    return config, path, write_transformer(path, config)


def rewrite(src, dst, config, edit):
    tensors = load_file(str(src))
    edit(tensors)
    R.write_checkpoint(dst, tensors, config)
    return dst


def test_a_file_without_transformer_is_refused(checkpoint, tmp_path):
    config, path, _ = checkpoint
    dst = rewrite(path, tmp_path / "vae_only.safetensors", config,
                  lambda t: [t.pop(k) for k in list(t) if k.startswith(PREFIX)])
    with pytest.raises(LtxAneError, match="holds no transformer"):
        load_transformer(Source(str(dst)))


def test_missing_and_misshaped_keys_are_named(checkpoint, tmp_path):
    config, path, _ = checkpoint

    def edit(t):
        del t[PREFIX + "transformer_blocks.0.attn1.to_q.bias"]
        t[PREFIX + "proj_out.weight"] = torch.zeros(3, 3)

    dst = rewrite(path, tmp_path / "broken.safetensors", config, edit)
    with pytest.raises(LtxAneError, match=r"missing \(transformer_blocks.0.attn1.to_q.bias\).*mis-shaped \(proj_out.weight"):
        load_transformer(Source(str(dst)))


@pytest.mark.parametrize("key, value, message", [
    ("qk_norm", "layer_norm", "transformer.qk_norm"),
    ("rope_type", "spiral", "rope_type"),
    ("audio_num_attention_heads", 8, "must equal audio_num_attention_heads"),
])
def test_unsupported_configs_are_refused(key, value, message):
    config = tiny_config("ltx2")
    config["transformer"][key] = value
    with pytest.raises(LtxAneError, match=message):
        TransformerConfig.from_dict(config)
    with pytest.raises(LtxAneError, match="no 'transformer' section"):
        TransformerConfig.from_dict({"vae": {}})


def test_fp8_checkpoint_is_dequantised_exactly(checkpoint, tmp_path):
    config, path, _ = checkpoint
    fp8 = {k: (v.to(torch.float8_e4m3fn) if k.startswith(PREFIX) and v.ndim == 2 else v)
           for k, v in load_file(str(path)).items()}
    dst = tmp_path / "fp8.safetensors"
    save_file(fp8, str(dst), metadata={"config": json.dumps(config)})
    model = load_transformer(Source(str(dst)), dtype="fp32")
    loaded = dict(tree_flatten(model.parameters()))
    for key, value in fp8.items():
        name = key[len(PREFIX):]
        if name in loaded:
            assert np.array_equal(np.array(loaded[name]), value.float().numpy()), name
    reference = RT.reference_transformer_from_checkpoint(dst, config)
    video, audio = make_inputs(config)
    for ref, out in zip(run_reference(reference, video, audio), run_mlx(model, video, audio)):
        assert rel_err(ref, out) <= FP32_TOL


def test_random_weights_have_the_real_architecture():
    """The released 19B and 2.3 layouts, name by name and shape by shape (built lazily: nothing is allocated)."""
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    for version in ("ltx2", "ltx23"):
        with torch.device("meta"):
            reference = LTXModelConfigurator.from_config({"transformer": load_preset(version)["transformer"]})
        expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        model = LTXModel(TransformerConfig.from_dict({"transformer": load_preset(version)["transformer"]}))
        assert {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())} == expected


def test_random_weights_are_seeded(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_config("ltx23", num_layers=1)))
    a, b, c = (load_transformer(Source(None, str(path), random_weights=True), dtype="bf16", seed=s) for s in (0, 0, 1))
    pa, pb, pc = (dict(tree_flatten(m.parameters())) for m in (a, b, c))
    assert all(v.dtype == mx.bfloat16 for v in pa.values())
    assert all(np.array_equal(np.array(pa[k].astype(mx.float32)), np.array(pb[k].astype(mx.float32))) for k in pa)
    table = "transformer_blocks.0.scale_shift_table"
    assert not np.array_equal(np.array(pa[table].astype(mx.float32)), np.array(pc[table].astype(mx.float32)))
    assert float(mx.abs(pa[table].astype(mx.float32)).max()) > 0


LORA_TARGETS = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.0.ff.net.0.proj",
                "transformer_blocks.0.audio_to_video_attn.to_v", "caption_projection.linear_1")


def write_lora(path, model_sd: dict, rank: int = 4, seed: int = 0, targets=LORA_TARGETS):
    """A LoRA file as released (``diffusion_model.<path>.lora_A/B.weight``, bf16)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for target in targets:
        out_features, in_features = model_sd[target + ".weight"].shape
        tensors[f"diffusion_model.{target}.lora_A.weight"] = torch.randn(rank, in_features, generator=g) * 0.1
        tensors[f"diffusion_model.{target}.lora_B.weight"] = torch.randn(out_features, rank, generator=g) * 0.1
    R.write_checkpoint(path, tensors, None)
    return path


def test_lora_fusion_matches_ltx_core(checkpoint, tmp_path):
    from ltx_core.loader.fuse_loras import apply_loras
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict

    config, path, _ = checkpoint
    model_sd = {k[len(PREFIX):]: v for k, v in load_file(str(path)).items() if k.startswith(PREFIX)}
    loras = [(write_lora(tmp_path / "a.safetensors", model_sd, seed=1), 0.7),
             (write_lora(tmp_path / "b.safetensors", model_sd, seed=2, targets=LORA_TARGETS[:2]), -0.4)]

    def lora_state(p):
        sd = {k.removeprefix("diffusion_model."): v.float() for k, v in load_file(str(p)).items()}
        return StateDict(sd, torch.device("cpu"), 0, {torch.float32})

    fused = apply_loras(StateDict(model_sd, torch.device("cpu"), 0, {torch.bfloat16}),
                        [LoraStateDictWithStrength(lora_state(p), s) for p, s in loras], dtype=torch.float32).sd
    model = load_transformer(Source(str(path)), dtype="fp32", loras=loras)
    loaded = dict(tree_flatten(model.parameters()))
    for target in LORA_TARGETS:
        ref = fused[target + ".weight"].numpy()
        assert rel_err(ref, np.array(loaded[target + ".weight"])) <= 1e-6
        assert rel_err(ref, model_sd[target + ".weight"].float().numpy()) > 1e-3  # the LoRA did change it
    untouched = "transformer_blocks.0.attn2.to_k.weight"
    assert np.array_equal(np.array(loaded[untouched]), fused[untouched].numpy())


def test_a_lora_for_another_model_is_refused(checkpoint, tmp_path):
    config, path, _ = checkpoint
    lora = tmp_path / "other.safetensors"
    R.write_checkpoint(lora, {"diffusion_model.blocks.0.attn.qkv.lora_A.weight": torch.zeros(2, 8),
                              "diffusion_model.blocks.0.attn.qkv.lora_B.weight": torch.zeros(8, 2)}, None)
    with pytest.raises(LtxAneError, match="not weights of this transformer"):
        load_transformer(Source(str(path)), loras=[(lora, 1.0)])
    empty = tmp_path / "empty.safetensors"
    R.write_checkpoint(empty, {"something.weight": torch.zeros(2)}, None)
    with pytest.raises(LtxAneError, match="holds no LoRA pairs"):
        load_transformer(Source(str(path)), loras=[(empty, 1.0)])


@pytest.mark.parametrize("bits, min_psnr", [(8, 35.0), (4, 15.0)])
def test_quantisation_quality_gate(checkpoint, bits, min_psnr):
    config, path, _ = checkpoint
    full = load_transformer(Source(str(path)), dtype="fp32")
    quantised = load_transformer(Source(str(path)), dtype="fp32", quantize=QuantizeMode(bits, 32))
    assert isinstance(quantised.transformer_blocks[0].ff.net[0].proj, nn.QuantizedLinear)
    assert isinstance(quantised.patchify_proj, nn.Linear) and not isinstance(quantised.patchify_proj, nn.QuantizedLinear)
    video, audio = make_inputs(config, seed=4)
    quality = velocity_psnr(full, quantised, video.mlx(), audio.mlx())
    assert set(quality) == {"video", "audio"}
    assert min(quality.values()) >= min_psnr
    assert max(quality.values()) < 200  # really quantised


def test_a_quantisation_the_widths_cannot_take_is_refused(checkpoint):
    config, path, _ = checkpoint
    with pytest.raises(LtxAneError, match="input features, not a multiple of 64"):
        load_transformer(Source(str(path)), quantize=QuantizeMode(4, 64))  # the tiny audio stream is 32 wide
    with pytest.raises(LtxAneError, match="bits must be one of"):
        QuantizeMode.parse("3")
