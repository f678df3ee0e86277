"""Small VAE checkpoints in the real format (real key names, bf16, embedded config), built with ltx-core."""

from __future__ import annotations

import copy
from pathlib import Path

from ltx_ane import reference as R
from ltx_ane.reference import video_vae as RV
from ltx_ane.models.config import load_preset


def small_config(preset: str = "ltx2", base: int = 4, latent: int = 16) -> dict:
    """A preset's VAE section at reduced width, through the config's own keys."""
    raw = {"vae": copy.deepcopy(load_preset(preset)["vae"])}
    raw["vae"]["decoder_base_channels"] = base
    raw["vae"]["latent_channels"] = latent
    return raw


def write_vae(path: Path, raw: dict, seed: int = 0, with_config: bool = True) -> Path:
    tensors = RV.vae_state_dict(RV.build_decoder(raw, seed), RV.build_encoder(raw, seed))
    return R.write_checkpoint(path, tensors, raw if with_config else None)
