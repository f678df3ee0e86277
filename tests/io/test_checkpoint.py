"""Checkpoint files: headers of every safetensors dtype, fp8 dequantised on load, Hugging Face cache resolution."""

import json

import mlx.core as mx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import fp8_table, load_tensors, read_header, resolve_checkpoint


@pytest.mark.parametrize("dtype,torch_dtype", [("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2)])
def test_fp8_table_matches_torch_for_every_code(dtype, torch_dtype):
    codes = torch.arange(256, dtype=torch.uint8).view(torch_dtype).float().numpy()
    np.testing.assert_array_equal(fp8_table(dtype), codes)


def test_fp8_file_yields_its_bf16_tensors_and_dequantised_fp8_ones(tmp_path):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 6, generator=g) * 4
    bias = torch.randn(6, generator=g).to(torch.bfloat16)
    path = tmp_path / "ckpt.safetensors"
    save_file({"vae.decoder.w": weight.to(torch.float8_e4m3fn), "vae.decoder.b": bias,
               "model.diffusion_model.x": weight.to(torch.float8_e5m2)}, str(path),
              metadata={"config": json.dumps({"vae": {}})})
    header = read_header(path)
    assert header.tensors["vae.decoder.w"].dtype == "F8_E4M3" and header.tensors["vae.decoder.w"].nbytes == 48
    out = load_tensors(path, {"vae.decoder.": ""})
    assert set(out) == {"w", "b"} and out["w"].dtype == mx.bfloat16
    np.testing.assert_array_equal(np.array(out["w"].astype(mx.float32)), weight.to(torch.float8_e4m3fn).float().numpy())
    np.testing.assert_array_equal(np.array(out["b"].astype(mx.float32)), bias.float().numpy())


def test_unknown_dtype_is_refused_by_name(tmp_path):
    path = tmp_path / "odd.safetensors"
    header = json.dumps({"t": {"dtype": "Q3", "shape": [2], "data_offsets": [0, 2]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0")
    with pytest.raises(LtxAneError, match="unknown dtype Q3"):
        read_header(path)


def test_hf_cache_resolution_skips_an_unreadable_file(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "a_partial.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{")  # an interrupted download, smallest
    save_file({"vae.decoder.w": torch.zeros(4, 4)}, str(snapshot / "b_model.safetensors"))
    (tmp_path / "hub" / "models--org--name" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--name" / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_checkpoint("org/name", wanted_prefix="vae.decoder.").name == "b_model.safetensors"
