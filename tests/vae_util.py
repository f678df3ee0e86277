"""Small VAE checkpoints in the real format (real key names, bf16, embedded config), built with ltx-core."""

from __future__ import annotations

import copy
from pathlib import Path

import mlx.core as mx
import numpy as np
import torch

from ltx_ane import reference as R
from ltx_ane.reference import video_vae as RV
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder, load_encoder

TOL = 1e-4  # max abs error <= TOL * max|ref| in fp32


def small_config(preset: str = "ltx2", base: int = 4, latent: int = 16) -> dict:
    """A preset's VAE section at reduced width, through the config's own keys."""
    raw = {"vae": copy.deepcopy(load_preset(preset)["vae"])}
    raw["vae"]["decoder_base_channels"] = base
    raw["vae"]["latent_channels"] = latent
    return raw


def write_vae(path: Path, raw: dict, seed: int = 0, with_config: bool = True) -> Path:
    tensors = RV.vae_state_dict(RV.build_decoder(raw, seed), RV.build_encoder(raw, seed))
    return R.write_checkpoint(path, tensors, raw if with_config else None)


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref - out).max() / np.abs(ref).max())


def assert_both_match_reference(path, raw, latent, video):
    """The checkpoint's decoder on ``latent`` and encoder on ``video``, MLX against ltx-core, both in fp32."""
    with torch.no_grad():
        dec_ref = RV.reference_decoder_from_checkpoint(path, raw)(latent).numpy()
        enc_ref = RV.reference_encoder_from_checkpoint(path, raw)(video).numpy()
    dec = np.array(load_decoder(Source(str(path)), "fp32")(mx.array(latent.numpy())))
    enc = np.array(load_encoder(Source(str(path)), "fp32")(mx.array(video.numpy())))
    assert rel_err(dec_ref, dec) <= TOL
    assert rel_err(enc_ref, enc) <= TOL


def psnr(ref, out):
    return 10 * np.log10(np.abs(ref).max() ** 2 / np.mean((ref - out) ** 2))
