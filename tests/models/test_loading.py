"""The loading layer: key operations, strict application, seeded random weights, config precedence, the registry."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from ltx_ane.errors import LtxAneError
from ltx_ane.models import registry
from ltx_ane.models.config import load_preset
from ltx_ane.models.loading import KeyOps, Source, randomize, resolve_config
from ltx_ane.models.video_vae.loader import vae_keys


def test_key_ops_rename_by_first_matching_prefix_and_ignore():
    ops = vae_keys("decoder")
    assert ops.model_name("vae.decoder.conv_in.conv.weight") == "conv_in.conv.weight"
    assert ops.model_name("vae.per_channel_statistics.std-of-means") == "per_channel_statistics.std-of-means"
    assert ops.model_name("vae.per_channel_statistics.channel") is None  # unused statistic
    assert ops.model_name("vae.encoder.conv_in.conv.weight") is None
    assert KeyOps(renames=(("", "x."),)).select(["a", "b"]) == {"a": "x.a", "b": "x.b"}


@pytest.mark.parametrize("name", registry.NAMES)
def test_random_weights_are_reproducible_from_the_seed(name):
    spec = registry.spec(name)
    raw, _ = spec.resolve(Source(random_weights=True, config=_small(name)))
    params = [dict(tree_flatten(spec.load(Source(random_weights=True, config=raw), "fp32", seed).parameters()))
              for seed in (7, 7, 8)]
    assert all(np.array_equal(np.array(params[0][k]), np.array(params[1][k])) for k in params[0])
    assert any(not np.array_equal(np.array(params[0][k]), np.array(params[2][k])) for k in params[0] if params[0][k].size > 1)
    stds = [v for k, v in params[0].items() if k.endswith("std-of-means")]
    assert all(float(mx.min(s)) >= 0.5 for s in stds)


def _small(name: str) -> dict:
    if registry.spec(name).family == "upscaler":
        raw = load_preset(f"{name}-x2")
        raw["mid_channels"] = 32
        raw["num_blocks_per_stage"] = 1
        return raw
    from tests.vae_util import small_config

    return small_config("ltx2")


def test_config_precedence_dict_then_file_then_metadata(tmp_path):
    from ltx_ane.reference import write_checkpoint
    import torch

    embedded = {"vae": {"latent_channels": 16}}
    path = write_checkpoint(tmp_path / "v.safetensors", {"vae.decoder.x": torch.zeros(1)}, embedded)
    assert resolve_config(Source(str(path)), "vae.", lambda p: {}, section="vae")[0] == embedded
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"vae": {"latent_channels": 8}}))
    assert resolve_config(Source(str(path), config_file=str(cfg_file)), "vae.", lambda p: {})[0]["vae"]["latent_channels"] == 8
    given = {"vae": {"latent_channels": 4}}
    assert resolve_config(Source(str(path), config_file=str(cfg_file), config=given), "vae.", lambda p: {})[0] is given
    with pytest.raises(LtxAneError, match="no 'vae' section"):
        write_checkpoint(tmp_path / "t.safetensors", {"x": torch.zeros(1)}, {"transformer": {}})
        resolve_config(Source(str(tmp_path / "t.safetensors")), "", lambda p: {}, section="vae")


def test_registry_names_every_component_once_with_its_calling_convention():
    assert registry.NAMES == ("decoder", "encoder", "spatial", "temporal")
    assert registry.TILED == ("decoder", "encoder")
    assert {registry.spec(n).io for n in registry.NAMES} == {"decode", "encode", "upsample"}
    with pytest.raises(LtxAneError, match="unknown component 'vocoder'"):
        registry.spec("vocoder")


def test_randomize_keeps_the_dtype():
    from ltx_ane.models.upscaler.config import UpsamplerConfig
    from ltx_ane.models.upscaler.model import LatentUpsampler

    model = LatentUpsampler(UpsamplerConfig.from_dict(_small("temporal")))
    randomize(model, mx.bfloat16, seed=0)
    assert {v.dtype for _, v in tree_flatten(model.parameters())} == {mx.bfloat16}
