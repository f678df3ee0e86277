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


def plain_synthesize(generator, frames):
    """A vocoder generator's forward pass as ltx-core orders it, one operation at a time (each conv with its bias,
    every activation on its own, the block average as a sum then a division): what the model's fused kernels must
    reproduce bit for bit."""
    import mlx.core as mx
    import mlx.nn as nn

    from ltx_ane.models.audio_vae.vocoder import LRELU_SLOPE, POST_LRELU_SLOPE

    cfg = generator.config
    per_stage = len(cfg.resblock_kernel_sizes)
    x = generator.conv_pre(frames)
    for i, up in enumerate(generator.ups):
        x = up(x if cfg.is_amp else nn.leaky_relu(x, LRELU_SLOPE))
        total = None
        for block in generator.resblocks[i * per_stage : (i + 1) * per_stage]:
            y = x
            if cfg.is_amp:
                for conv1, conv2, act1, act2 in zip(block.convs1, block.convs2, block.acts1, block.acts2):
                    y = y + conv2(act2(conv1(act1(y))))
            else:
                for conv1, conv2 in zip(block.convs1, block.convs2):
                    y = y + conv2(nn.leaky_relu(conv1(nn.leaky_relu(y, LRELU_SLOPE)), LRELU_SLOPE))
            total = y.astype(mx.float32) if total is None else total + y.astype(mx.float32)
        x = (total / per_stage).astype(x.dtype)
    x = generator.conv_post(generator.act_post(x) if cfg.is_amp else nn.leaky_relu(x, POST_LRELU_SLOPE))
    if cfg.apply_final_activation:
        x = mx.tanh(x) if cfg.use_tanh_at_final else mx.clip(x, -1, 1)
    return x
