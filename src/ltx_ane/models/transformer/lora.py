"""LoRA fusion at load time: ``W += strength * B @ A`` for every ``<key>.lora_A.weight`` / ``lora_B.weight`` pair.

Matches ltx-core's ``apply_loras``; the product is formed in float32 (ltx-core forms it in the LoRA file's dtype),
then added to the weight and rounded once to the compute dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mlx.core as mx

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import load_tensors

LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


def _model_key(lora_key: str) -> str:
    """LoRA files name targets ``diffusion_model.<path>`` (ComfyUI style), sometimes with ``model.`` before it."""
    _, found, rest = lora_key.partition("diffusion_model.")
    return rest if found else lora_key


def read_lora(path: str | Path) -> dict[str, tuple[mx.array, mx.array]]:
    """{target weight name: (A, B)} of one LoRA file."""
    path = Path(path)
    if not path.is_file():
        raise LtxAneError(f"LoRA file not found: {path}")
    tensors = load_tensors(path, {"": ""})
    pairs = {}
    for key, a in tensors.items():
        if key.endswith(LORA_A):
            b_key = key[: -len(LORA_A)] + LORA_B
            if b_key not in tensors:
                raise LtxAneError(f"{path}: {key} has no matching {b_key}")
            pairs[_model_key(key[: -len(LORA_A)]) + ".weight"] = (a, tensors[b_key])
    if not pairs:
        raise LtxAneError(f"{path} holds no LoRA pairs (no '*{LORA_A}' tensors)")
    return pairs


def fuse_loras(weights: dict[str, mx.array], loras: Sequence[tuple[str | Path, float]], dtype,
               under: str = "") -> None:
    """Add each LoRA's ``strength * B @ A`` to ``weights`` (model names) in place, as ``dtype``.

    A LoRA that names a weight the model does not have, or has with another shape, is an error: it was made for
    another model. ``under``: only the targets under this prefix, with ``weights`` named relative to it (one
    streamed block's weights).
    """
    deltas: dict[str, mx.array] = {}
    for path, strength in loras:
        pairs = {key[len(under):]: pair for key, pair in read_lora(path).items() if key.startswith(under)}
        unknown = sorted(k for k in pairs if k not in weights)
        if unknown:
            raise LtxAneError(
                f"LoRA {path}: {len(unknown)} of its {len(pairs)} targets are not weights of this transformer "
                f"(e.g. {unknown[0]}); was it made for another model?"
            )
        for key, (a, b) in pairs.items():
            delta = (b.astype(mx.float32) * strength) @ a.astype(mx.float32)
            if delta.shape != tuple(weights[key].shape):
                raise LtxAneError(
                    f"LoRA {path}: {key} has shape {list(delta.shape)}, the model's is {list(weights[key].shape)}"
                )
            deltas[key] = deltas[key] + delta if key in deltas else delta
    for key, delta in deltas.items():
        weights[key] = (weights[key].astype(mx.float32) + delta).astype(dtype)


def fuse_loras_into(model, loras: Sequence[tuple[str | Path, float]]) -> None:
    """Fuse LoRAs into an already loaded, unquantised model (the two-stage pipelines' stage 2 adds the distilled
    LoRA to the stage-1 weights instead of reading 40 GB again)."""
    from mlx.utils import tree_flatten, tree_unflatten

    if getattr(model, "block_streamer", None) is not None:
        raise LtxAneError("LoRAs cannot be fused into a transformer that streams its blocks; load it again with the LoRA")
    weights = dict(tree_flatten(model.parameters()))
    if any(name.endswith(".scales") for name in weights):
        raise LtxAneError("LoRAs cannot be fused into a quantised transformer; load it again with the LoRA")
    fused = dict(weights)
    fuse_loras(fused, loras, next(iter(weights.values())).dtype)
    model.update(tree_unflatten([(name, value) for name, value in fused.items() if value is not weights[name]]))
    mx.eval(model.parameters())
