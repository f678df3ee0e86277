"""Which attention a forward pass skips, per block and per batch item, mirroring ltx-core's guidance perturbations.

Spatio-temporal guidance (STG) runs a batch item with a block's self-attention replaced by its value projection;
modality isolation zeroes the audio-to-video and video-to-audio residuals. The sampling guiders combine the outputs
as arrays and never read this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import mlx.core as mx


class PerturbationType(Enum):
    SKIP_A2V_CROSS_ATTN = "skip_a2v_cross_attn"
    SKIP_V2A_CROSS_ATTN = "skip_v2a_cross_attn"
    SKIP_VIDEO_SELF_ATTN = "skip_video_self_attn"
    SKIP_AUDIO_SELF_ATTN = "skip_audio_self_attn"


@dataclass(frozen=True)
class Perturbation:
    """Skip one kind of attention in the listed blocks (all blocks when ``blocks`` is None)."""

    type: PerturbationType
    blocks: tuple[int, ...] | None

    def is_perturbed(self, perturbation_type: PerturbationType, block: int) -> bool:
        return self.type == perturbation_type and (self.blocks is None or block in self.blocks)


@dataclass(frozen=True)
class PerturbationConfig:
    """The perturbations of one batch item."""

    perturbations: tuple[Perturbation, ...] = ()

    def is_perturbed(self, perturbation_type: PerturbationType, block: int) -> bool:
        return any(p.is_perturbed(perturbation_type, block) for p in self.perturbations)


@dataclass(frozen=True)
class BatchedPerturbationConfig:
    """One ``PerturbationConfig`` per batch item."""

    perturbations: tuple[PerturbationConfig, ...]

    @staticmethod
    def empty(batch_size: int) -> "BatchedPerturbationConfig":
        return BatchedPerturbationConfig(tuple(PerturbationConfig() for _ in range(batch_size)))

    def any_in_batch(self, perturbation_type: PerturbationType, block: int) -> bool:
        return any(p.is_perturbed(perturbation_type, block) for p in self.perturbations)

    def all_in_batch(self, perturbation_type: PerturbationType, block: int) -> bool:
        return all(p.is_perturbed(perturbation_type, block) for p in self.perturbations)

    def mask_like(self, perturbation_type: PerturbationType, block: int, values: mx.array) -> mx.array:
        """(B, 1, ...) with 0 for the batch items that skip, 1 for the others, in ``values``' dtype."""
        keep = [0.0 if p.is_perturbed(perturbation_type, block) else 1.0 for p in self.perturbations]
        return mx.array(keep, dtype=values.dtype).reshape(len(keep), *([1] * (values.ndim - 1)))
