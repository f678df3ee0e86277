"""Conv work per call, counted on ltx-core's own modules on the meta device (no memory, no compute).

FLOP = 2 x MAC over every Conv1d/2d/3d; other ops are a few percent at most and are left out, as in the
project's cost table. Checked against it: LTX-2 decode of latent 16x16x24 (121 x 512 x 768) = 60.2 TFLOP,
encode of the same video 139.7, temporal x2 of latent 16x16x24 2.3, spatial x2 of latent 16x16x24 14.6
(3.65 for 16x8x12). Needs torch and ltx-core; without them the count is None and the report says so.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache


def input_shape(component: str, config: dict, tile: tuple[int, int, int]) -> tuple[int, ...]:
    """The (B, C, F, H, W) input of one call for a tile given in latent units [F, h, w]."""
    from ltx_ane.models.registry import spec

    return spec(component).input_shape(config, tile)


def _configurator(io: str):
    """ltx-core's builder for each calling convention (models.registry's ``io``)."""
    if io == "upsample":
        from ltx_core.model.upsampler import LatentUpsamplerConfigurator

        return LatentUpsamplerConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator

    return VideoDecoderConfigurator if io == "decode" else VideoEncoderConfigurator


def conv_flops(component: str, config: dict, tile: tuple[int, int, int]) -> int | None:
    try:
        return _count(component, json.dumps(config, sort_keys=True), tuple(tile))
    except ImportError:
        return None
    except Exception:  # a shape ltx-core rejects (e.g. reflect padding wider than the input) has no count
        return None


@lru_cache(maxsize=64)
def _count(component: str, config_json: str, tile: tuple[int, int, int]) -> int:
    import torch

    config = json.loads(config_json)
    shape = input_shape(component, config, tile)
    with torch.device("meta"):
        from ltx_ane.models.registry import spec

        module = _configurator(spec(component).io).from_config(config).eval()
        total = 0

        def hook(mod, _inputs, out):
            nonlocal total
            total += 2 * out.numel() * math.prod(mod.weight.shape[1:])

        convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
        handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, convs)]
        try:
            with torch.no_grad():
                module(torch.empty(shape))
        finally:
            for h in handles:
                h.remove()
    return total


def time_at_peak(flops: int | None, tflops: float | None) -> float | None:
    if not flops or not tflops:
        return None
    return flops / (tflops * 1e12)
