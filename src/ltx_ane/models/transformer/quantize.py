"""Weight quantisation of the transformer's big Linear layers with MLX's own ``nn.quantize``, and its quality gate.

Only the Linear layers inside the blocks are quantised (attention projections, feed-forwards: >99 % of the
weights); the embeddings, AdaLN, caption projection, output head and the per-head gate logits stay in the compute
dtype, which keeps the timestep conditioning exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ltx_ane.errors import LtxAneError

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class QuantizeMode:
    bits: int
    group_size: int = 64

    @classmethod
    def parse(cls, text: str) -> "QuantizeMode":
        """``"8"``, ``"4"`` or ``"4:32"`` (bits[:group size])."""
        bits, _, group = str(text).partition(":")
        try:
            mode = cls(int(bits), int(group) if group else 64)
        except ValueError:
            raise LtxAneError(f"quantisation mode {text!r}: expected BITS or BITS:GROUP_SIZE, e.g. 8 or 4:32") from None
        mode.check()
        return mode

    def check(self) -> None:
        if self.bits not in BITS or self.group_size not in GROUP_SIZES:
            raise LtxAneError(
                f"quantisation mode {self.bits}-bit, group {self.group_size}: bits must be one of {BITS} and the "
                f"group size one of {GROUP_SIZES}"
            )

    def describe(self) -> str:
        return f"{self.bits}-bit, group size {self.group_size}"


def _is_quantised_layer(path: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and path.startswith("transformer_blocks.") and not path.endswith(
        "to_gate_logits"
    )


def check_quantizable(model: nn.Module, mode: QuantizeMode) -> None:
    """Refuse a mode the weights cannot take (a width the group size does not divide) before anything is loaded."""
    mode.check()
    layers = [(p, m) for p, m in model.named_modules() if _is_quantised_layer(p, m)]
    for path, layer in layers:
        in_features = layer.weight.shape[1]
        if in_features % mode.group_size:
            raise LtxAneError(
                f"cannot quantise to {mode.describe()}: {path} has {in_features} input features, not a multiple of "
                f"{mode.group_size} (choose a smaller group size)"
            )


def quantize_transformer(model: nn.Module, mode: QuantizeMode) -> None:
    check_quantizable(model, mode)
    nn.quantize(model, group_size=mode.group_size, bits=mode.bits, class_predicate=_is_quantised_layer)
    mx.eval(model.parameters())


def psnr(reference: mx.array, candidate: mx.array) -> float:
    """Peak signal-to-noise ratio in dB, the peak being max |reference|."""
    ref = np.array(reference.astype(mx.float32), dtype=np.float64)
    out = np.array(candidate.astype(mx.float32), dtype=np.float64)
    mse = np.mean((ref - out) ** 2)
    return float("inf") if mse == 0 else float(20 * np.log10(np.abs(ref).max() / np.sqrt(mse)))


def velocity_psnr(reference_model, candidate_model, video, audio) -> dict[str, float]:
    """The quality gate: PSNR of each velocity of ``candidate_model`` against ``reference_model`` on one input."""
    ref_video, ref_audio = reference_model(video, audio)
    out_video, out_audio = candidate_model(video, audio)
    result = {}
    if ref_video is not None:
        result["video"] = psnr(ref_video, out_video)
    if ref_audio is not None:
        result["audio"] = psnr(ref_audio, out_audio)
    return result
