"""Block streaming: the transformer with one block's weights resident at a time, for Macs that cannot hold it all.

The 48 blocks are ~98 % of the weights. A streamed model keeps the rest (embeddings, AdaLN, caption projection,
output head) resident and gives each block its weights only while it runs: read from the memory-mapped checkpoint
(``mx.load`` arrays are read from disk when evaluated), cast, fp8-dequantised and LoRA-fused exactly as a normal load
does, evaluated, used, then replaced by unevaluated placeholders, which hold no memory. Every forward therefore reads
the blocks from disk once more; the model computes bit for bit what the normally loaded one computes.

The arrays handed to a block are made fresh for every visit: an evaluated array keeps its data for as long as
anything references it, so a lazily built weight kept between visits would stay resident after its first use.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import apply_weights, load_tensors

BLOCKS = "transformer_blocks."


def is_block_weight(name: str) -> bool:
    return name.startswith(BLOCKS)


def check_block_weights(model: nn.Module, tensors: dict[str, mx.array], source: str) -> None:
    """The checkpoint's block tensors against the model's blocks by name and shape, without reading them (a
    normal load finds a mismatch when it applies the weights; a streamed one would only at the block's turn)."""
    expected = {name: p.shape for name, p in tree_flatten(model.parameters()) if is_block_weight(name)}
    found = {name: value.shape for name, value in tensors.items() if is_block_weight(name)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(f"{name} {list(found[name])} (model wants {list(expected[name])})"
                       for name in set(expected) & set(found) if tuple(found[name]) != tuple(expected[name]))
    problems = [f"{len(names)} {kind} (e.g. {names[0]})"
                for kind, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if names]
    if problems:
        raise LtxAneError(f"{source}: block weights do not match the model config: " + "; ".join(problems))


@contextmanager
def without_blocks(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its block list emptied for the duration, so that whole-model operations (strict weight
    checks, random initialisation) see only the resident, non-block part."""
    blocks = model.transformer_blocks
    model.transformer_blocks = []
    try:
        yield model
    finally:
        model.transformer_blocks = blocks


def release(block: nn.Module) -> None:
    """Replace a block's weights by unevaluated zeros of the same shapes and dtypes (no memory is allocated)."""
    block.update(tree_unflatten([(name, mx.zeros(p.shape, p.dtype))
                                 for name, p in tree_flatten(block.parameters())]))


class CheckpointBlocks:
    """Each block's weights read from the checkpoint, with the LoRAs fused into them, on demand."""

    def __init__(self, path: Path, file_prefix: str, dtype, loras: Sequence[tuple[str | Path, float]] = ()):
        self.path, self.file_prefix, self.dtype, self.loras = path, file_prefix, dtype, tuple(loras)

    def load(self, index: int, block: nn.Module) -> None:
        from ltx_ane.models.transformer.lora import fuse_loras

        scope = f"{BLOCKS}{index}."
        tensors = load_tensors(self.path, {self.file_prefix + scope: ""})
        fuse_loras(tensors, self.loras, self.dtype, under=scope)
        apply_weights(block, tensors, self.dtype, source=f"{self.path} (transformer block {index})")


class RandomBlocks:
    """Random block weights, drawn again from a per-block seed (``seed`` + 1 + index) on every visit. They are not
    the values a non-streamed ``--random-weights`` load draws (that one draws all parameters from one key chain)."""

    def __init__(self, dtype, seed: int):
        self.dtype, self.seed = dtype, seed

    def load(self, index: int, block: nn.Module) -> None:
        from ltx_ane.models.loading import randomize

        randomize(block, self.dtype, self.seed + 1 + index)


class BlockStreamer:
    """Gives the model's blocks their weights one at a time (``LTXModel.resident_blocks``)."""

    def __init__(self, source: CheckpointBlocks | RandomBlocks):
        self.source = source

    @contextmanager
    def resident(self, index: int, block: nn.Module) -> Iterator[nn.Module]:
        """The block with its weights evaluated; released on exit. The caller evaluates what it computed with the
        block before leaving, so that its graph no longer holds the weights."""
        self.source.load(index, block)
        try:
            yield block
        finally:
            release(block)
