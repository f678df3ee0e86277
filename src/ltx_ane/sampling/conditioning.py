"""Image and keyframe conditioning of a video state (ltx-core ``conditioning``, ltx-pipelines' image helpers).

- ``ReplaceLatentFrame``: an encoded image replaces the tokens of one latent frame (frame 0 for I2V) in ``latent``
  and ``clean_latent``; their denoise mask becomes ``1 - strength``.
- ``AppendKeyframe``: an encoded image is appended as extra tokens whose positions are those of a one-frame latent
  moved ``frame_index`` pixel frames later; ``clear_conditioning`` drops them at the end. With
  ``attention_strength`` it also builds the (B, T, T) self-attention mask (ltx-core's attention-strength wrapper).
- ``combined_image_conditionings`` (one-stage, two-stage, distilled, HQ) and ``keyframe_conditionings`` (keyframe
  interpolation) turn encoded images into the items the reference pipelines build.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling.patchify import VideoLatentShape, patchify_video, video_positions
from ltx_ane.sampling.state import LatentState, VideoLatentTools


def _check_strength(strength: float, what: str) -> None:
    if not 0.0 <= strength <= 1.0:
        raise LtxAneError(f"{what} must be in [0, 1], got {strength}")


def _check_spatial_match(latent: mx.array, target: VideoLatentShape) -> None:
    b, c, _, h, w = latent.shape
    if (b, c, h, w) != (target.batch, target.channels, target.height, target.width):
        raise LtxAneError(
            f"conditioning latent {tuple(latent.shape)} does not match the video latent {tuple(target)} "
            "in batch, channels, height or width"
        )


@dataclass(frozen=True)
class EncodedImage:
    """A VAE-encoded conditioning image (B, C, 1, h, w) for pixel frame ``frame_index`` with ``strength``."""

    latent: mx.array
    frame_index: int
    strength: float


@dataclass(frozen=True)
class ReplaceLatentFrame:
    latent: mx.array  # (B, C, F_cond, h, w) at the video's latent size
    strength: float
    latent_index: int = 0

    def __post_init__(self) -> None:
        _check_strength(self.strength, "image strength")

    def apply(self, state: LatentState, tools: VideoLatentTools) -> LatentState:
        _check_spatial_match(self.latent, tools.shape)
        if not 0 <= self.latent_index or self.latent_index + self.latent.shape[2] > tools.shape.frames:
            raise LtxAneError(
                f"latent frame {self.latent_index} is outside the video's {tools.shape.frames} latent frames"
            )
        tokens = patchify_video(self.latent)
        start = self.latent_index * tools.shape.height * tools.shape.width
        stop = start + tokens.shape[1]

        def put(x: mx.array, value: mx.array) -> mx.array:
            x = mx.array(x)
            x[:, start:stop] = value
            return x

        mask_value = mx.full((state.denoise_mask.shape[0], stop - start, 1), 1.0 - self.strength, mx.float32)
        return LatentState(
            latent=put(state.latent, tokens.astype(state.latent.dtype)),
            denoise_mask=put(state.denoise_mask, mask_value),
            positions=state.positions,
            clean_latent=put(state.clean_latent, tokens.astype(state.clean_latent.dtype)),
            attention_mask=state.attention_mask,
        )


@dataclass(frozen=True)
class AppendKeyframe:
    latent: mx.array  # (B, C, F_cond, h, w)
    frame_index: int  # pixel frame of the keyframe's first frame
    strength: float
    attention_strength: float | None = None  # None: no attention mask of its own (plain keyframe conditioning)

    def __post_init__(self) -> None:
        _check_strength(self.strength, "keyframe strength")
        if self.attention_strength is not None:
            _check_strength(self.attention_strength, "keyframe attention strength")

    def apply(self, state: LatentState, tools: VideoLatentTools) -> LatentState:
        if not 0 <= self.frame_index < tools.shape.pixel_frames:
            last = tools.shape.pixel_frames - 1
            raise LtxAneError(f"keyframe index {self.frame_index} is outside the video's frames 0-{last}")
        _check_spatial_match(self.latent, tools.shape)
        tokens = patchify_video(self.latent)
        batch, num_new = tokens.shape[:2]
        # The causal fix belongs to latent frame 0 of the video only; a later keyframe starts exactly at its frame.
        positions = video_positions(
            VideoLatentShape(*self.latent.shape), tools.fps, self.frame_index, causal_fix=self.frame_index == 0
        )
        # ltx-core fills the mask in the keyframe's dtype (bf16 in the pipelines), so 1 - strength is rounded there.
        mask = mx.full((batch, num_new, 1), 1.0 - self.strength, self.latent.dtype)
        latent = mx.concatenate([state.latent, tokens], axis=1)
        attention_mask = state.attention_mask
        if self.attention_strength is not None or attention_mask is not None:
            # ltx-core builds the wrapper's mask in the joined latent's dtype and a plain keyframe's (which only pads
            # an existing mask with ones) in the keyframe's dtype.
            weight = 1.0 if self.attention_strength is None else self.attention_strength
            dtype = self.latent.dtype if self.attention_strength is None else latent.dtype
            cross = mx.full((batch, num_new), weight)
            attention_mask = build_attention_mask(
                attention_mask, tools.shape.token_count(), num_new, state.latent.shape[1], cross
            ).astype(dtype)
        return LatentState(
            latent=latent,
            denoise_mask=mx.concatenate([state.denoise_mask, mask], axis=1),
            positions=mx.concatenate([state.positions, positions], axis=2),
            clean_latent=mx.concatenate([state.clean_latent, tokens], axis=1),
            attention_mask=attention_mask,
        )


def build_attention_mask(
    existing: mx.array | None, num_noisy: int, num_new: int, num_existing: int, cross: mx.array
) -> mx.array:
    """Grow a (B, N, N) self-attention mask by M appended tokens -> (B, N+M, N+M), values in [0, 1].

    The noisy tokens [0, num_noisy) and the new ones attend each other with weight ``cross`` (B, M); the new tokens
    attend themselves fully; earlier appended groups and the new group do not see each other. Without an existing
    mask the first N x N block is all ones.
    """
    batch = cross.shape[0]
    total = num_existing + num_new
    mask = mx.zeros((batch, total, total), dtype=mx.float32)
    mask[:, :num_existing, :num_existing] = 1.0 if existing is None else existing.astype(mx.float32)
    mask[:, num_existing:, num_existing:] = 1.0
    cross = cross.astype(mx.float32)
    mask[:, :num_noisy, num_existing:] = mx.broadcast_to(cross[:, None, :], (batch, num_noisy, num_new))
    mask[:, num_existing:, :num_noisy] = mx.broadcast_to(cross[:, :, None], (batch, num_new, num_noisy))
    return mask


def apply_conditionings(
    state: LatentState, items: list[ReplaceLatentFrame | AppendKeyframe], tools: VideoLatentTools
) -> LatentState:
    for item in items:
        state = item.apply(state, tools)
    return state


def combined_image_conditionings(images: list[EncodedImage]) -> list[ReplaceLatentFrame | AppendKeyframe]:
    """Frame 0 replaces the first latent frame; any other frame is appended as a keyframe (ltx-pipelines)."""
    return [
        ReplaceLatentFrame(image.latent, image.strength, latent_index=0)
        if image.frame_index == 0
        else AppendKeyframe(image.latent, image.frame_index, image.strength)
        for image in images
    ]


def keyframe_conditionings(images: list[EncodedImage]) -> list[AppendKeyframe]:
    """Every image appended as a keyframe, frame 0 included (the keyframe-interpolation pipeline)."""
    return [AppendKeyframe(image.latent, image.frame_index, image.strength) for image in images]
