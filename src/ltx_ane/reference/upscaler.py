"""ltx-core's latent upscalers (spatial or temporal x2) with deterministic random weights, and their checkpoint keys."""

from __future__ import annotations

from ltx_ane.reference import build_with_random_weights


def build_upscaler(config: dict, seed: int = 0):
    def make():
        from ltx_core.model.upsampler import LatentUpsamplerConfigurator

        return LatentUpsamplerConfigurator.from_config(config)

    return build_with_random_weights(make, seed + 2, statistics=False)


def upscaler_state_dict(model) -> dict:
    """An upscaler's checkpoint keys as the released files name them: bare, blur kernel buffer included."""
    return dict(model.state_dict())
