"""Shared fixtures of the transformer parity tests: tiny configs of both released versions, checkpoints in the
released format, and the same inputs for ltx-core and MLX."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

import mlx.core as mx

from ltx_ane import reference as R
from ltx_ane.models.transformer.modality import Modality
from ltx_ane.models.config import load_preset
from ltx_ane.reference import transformer as RT

FP32_TOL = 1e-4  # max abs error <= FP32_TOL * max |reference|


def tiny_config(version: str, num_layers: int = 2, full_width: bool = False) -> dict:
    """A released config at reduced width (video 4 heads x 16, audio 4 x 8), or at full width."""
    t = copy.deepcopy(load_preset(version)["transformer"])
    t["num_layers"] = num_layers
    if not full_width:
        t.update(num_attention_heads=4, attention_head_dim=16, cross_attention_dim=64, audio_num_attention_heads=4,
                 audio_attention_head_dim=8, audio_cross_attention_dim=32, caption_channels=48,
                 in_channels=16, out_channels=16, audio_in_channels=12, audio_out_channels=12)
    return {"transformer": t}


def write_transformer(path, config: dict, seed: int = 0, with_text_connector: bool = True):
    """A released-format checkpoint (bf16, config metadata, other components' keys beside the transformer's);
    returns the reference model holding the file's rounded weights in float32."""
    import torch

    model = RT.build_transformer(config, seed=seed)
    tensors = RT.transformer_state_dict(model)
    g = torch.Generator().manual_seed(seed + 100)
    tensors["vae.decoder.conv_in.conv.weight"] = torch.randn(4, 4, 3, 3, 3, generator=g)
    if with_text_connector:
        tensors[RT.TRANSFORMER_PREFIX + "video_embeddings_connector.learnable_registers"] = torch.randn(8, 4, generator=g)
    R.write_checkpoint(path, tensors, config)
    return RT.reference_transformer_from_checkpoint(path, config)


@dataclass
class Inputs:
    """One modality's inputs as numpy arrays (positions possibly a bf16 torch tensor, as the pipelines pass them)."""

    latent: np.ndarray
    sigma: np.ndarray
    timesteps: np.ndarray
    positions: object
    context: np.ndarray
    attention_mask: np.ndarray | None = None
    context_mask: np.ndarray | None = None
    enabled: bool = True

    def mlx(self) -> Modality:
        import torch

        positions = self.positions
        if isinstance(positions, torch.Tensor):
            positions = mx.array(positions.float().numpy()).astype(mx.bfloat16 if positions.dtype == torch.bfloat16 else mx.float32)
        else:
            positions = mx.array(positions)
        opt = lambda a: None if a is None else mx.array(a)  # noqa: E731
        return Modality(latent=mx.array(self.latent), sigma=mx.array(self.sigma), timesteps=mx.array(self.timesteps),
                        positions=positions, context=mx.array(self.context), enabled=self.enabled,
                        context_mask=opt(self.context_mask), attention_mask=opt(self.attention_mask))

    def torch(self):
        return RT.torch_modality(self.latent, self.sigma, self.timesteps, self.positions, self.context,
                                 self.enabled, self.context_mask, self.attention_mask)


def make_inputs(config: dict, batch: int = 1, grid=(3, 2, 3), audio_tokens: int = 7, text_tokens: int = 6,
                sigma: float = 0.7, seed: int = 0) -> tuple[Inputs, Inputs]:
    t = config["transformer"]
    rng = np.random.default_rng(seed)
    n = int(np.prod(grid))
    if t.get("caption_proj_before_connector", False):
        video_ctx, audio_ctx = t["num_attention_heads"] * t["attention_head_dim"], t["audio_cross_attention_dim"]
    else:
        video_ctx = audio_ctx = t["caption_channels"]
    sigmas = np.full((batch,), sigma, dtype=np.float32)
    video = Inputs(
        latent=rng.standard_normal((batch, n, t["in_channels"]), dtype=np.float32),
        sigma=sigmas,
        timesteps=np.full((batch, n, 1), sigma, dtype=np.float32),
        positions=RT.video_positions(batch, *grid),
        context=rng.standard_normal((batch, text_tokens, video_ctx), dtype=np.float32),
    )
    audio = Inputs(
        latent=rng.standard_normal((batch, audio_tokens, t.get("audio_in_channels", 128)), dtype=np.float32),
        sigma=sigmas * 0.9,
        timesteps=np.full((batch, audio_tokens, 1), sigma * 0.9, dtype=np.float32),
        positions=RT.audio_positions(batch, audio_tokens),
        context=rng.standard_normal((batch, text_tokens, audio_ctx), dtype=np.float32),
    )
    return video, audio


def run_reference(model, video: Inputs | None, audio: Inputs | None, skips=None):
    import torch
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig

    batch = (video or audio).latent.shape[0]
    perturbations = RT.torch_perturbations(skips) if skips else BatchedPerturbationConfig.empty(batch)
    with torch.no_grad():
        outs = model(video.torch() if video else None, audio.torch() if audio else None, perturbations)
    return tuple(None if o is None else o.float().numpy() for o in outs)


def run_mlx(model, video: Inputs | None, audio: Inputs | None, perturbations=None):
    outs = model(video.mlx() if video else None, audio.mlx() if audio else None, perturbations)
    return tuple(None if o is None else np.array(o.astype(mx.float32)) for o in outs)


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.abs(ref - out).max() / np.abs(ref).max())
