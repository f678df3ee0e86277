"""Audio checkpoints in the real format (full-checkpoint key names, bf16, embedded config), built with ltx-core."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ltx_ane.models.config import load_preset
from ltx_ane.reference import load_checkpoint_into, write_checkpoint
from ltx_ane.reference import audio as RA

TOL = 1e-4  # max abs error <= TOL * max|ref| in fp32


def write_audio_checkpoint(path: Path, raw: dict, parts=("decoder", "encoder", "vocoder"), extra: dict | None = None):
    """Write the parts' random weights; return the reference modules holding the same bf16-rounded weights."""
    builders = {"decoder": RA.build_audio_decoder, "encoder": RA.build_audio_encoder, "vocoder": RA.build_vocoder}
    modules = {part: builders[part](raw) for part in parts}
    write_checkpoint(path, {**RA.audio_state_dict(**modules), **(extra or {})}, raw)
    prefixes = {"decoder": RA.DECODER_PREFIXES, "encoder": RA.ENCODER_PREFIXES, "vocoder": RA.VOCODER_PREFIXES}
    for part, module in modules.items():
        load_checkpoint_into(module, path, prefixes[part])
    return modules


def small_audio_config(preset: str = "ltx2") -> dict:
    """A preset's audio VAE and vocoder sections at reduced width through their own keys (for command-line tests,
    not parity at real width)."""
    raw = copy.deepcopy({key: load_preset(preset)[key] for key in ("audio_vae", "vocoder")})
    raw["audio_vae"]["model"]["params"]["ddconfig"].update(ch=32, z_channels=2, ch_mult=[1, 1, 2], num_res_blocks=1)
    generators = [raw["vocoder"]] if "bwe" not in raw["vocoder"] else [raw["vocoder"]["vocoder"], raw["vocoder"]["bwe"]]
    for generator in generators:
        generator["upsample_initial_channel"] = 64
    return raw


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref - out).max() / np.abs(ref).max())


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - out).astype(np.float64) ** 2)))


def assert_half_precision(load, path, reference, x, fp16_min_snr_db: float, bf16_margin_db: float) -> None:
    """The MLX model ``load(Source(path), dtype)`` (an audio loader) in bf16 is within ``bf16_margin_db`` of
    ltx-core's own bf16 SNR against fp32 on input ``x``, and in fp16 (3 more mantissa bits) above
    ``fp16_min_snr_db``."""
    import mlx.core as mx
    import torch

    from ltx_ane.models.loading import Source

    with torch.no_grad():
        expected = reference(x).numpy()
        reference_bf16 = copy.deepcopy(reference).to(torch.bfloat16)(x.bfloat16()).float().numpy()
    out = {dtype: np.array(load(Source(str(path)), dtype)(mx.array(x.numpy())).astype(mx.float32))
           for dtype in ("bf16", "fp16")}
    assert snr_db(expected, out["bf16"]) >= snr_db(expected, reference_bf16) - bf16_margin_db
    assert snr_db(expected, out["fp16"]) >= fp16_min_snr_db
