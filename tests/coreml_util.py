"""Small configs and helpers shared by the Core ML tests (kept tiny: 2 slow cores run the whole set)."""

from __future__ import annotations

import copy
import json
import sys

import pytest

from ltx_ane.models.config import load_preset

MACOS_ONLY = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML models run only on macOS (this machine cannot load or predict)")


def small_vae(preset: str, depth: int | None = None, **overrides) -> dict:
    """A preset VAE config at reduced width (decoder base 4, latent 16, same block list).

    ``depth`` caps every res_x block's layer count: conversion time grows with the op count, not the width.
    """
    cfg = {"vae": copy.deepcopy(load_preset(preset)["vae"])}
    vae = cfg["vae"]
    vae.update(decoder_base_channels=4, latent_channels=16, **overrides)
    if depth is not None:
        for key in ("decoder_blocks", "encoder_blocks"):
            for name, params in vae[key]:
                if name == "res_x":
                    params["num_layers"] = min(params["num_layers"], depth)
    return cfg


def small_upscaler(preset: str, mid: int = 64, blocks: int | None = None) -> dict:
    cfg = dict(load_preset(preset))
    cfg["mid_channels"] = mid
    if blocks is not None:
        cfg["num_blocks_per_stage"] = blocks
    return cfg


def write_json(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def rel_err(test, ref) -> float:
    return ((test - ref).abs().max() / ref.abs().max()).item()
