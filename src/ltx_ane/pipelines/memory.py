"""The memory plan of a generation: which transformer precision fits this machine, chosen before anything loads.

The phases never overlap: the text encoder is freed before the transformer loads, and the transformer before the
VAE decodes. The transformer phase decides: its weights (bf16, or 8-/4-bit with a bf16 scale and bias per group)
plus the activations of one forward, which grow with the token count, plus the prepared text of each prompt the
loop reuses (two with a negative prompt). The activation rule is fitted to the measured peaks in
``benchmarks/results/transformer-cuda-prepared-text.md`` (38.2 GB at 1,536 video tokens, 39.1 GB at 6,144, with
37.8 GB of weights, at the default queue bound; 39.3 / 40.2 GB with a prompt's text prepared; the later
``transformer-cuda.md`` peaks lower, 38.2 / 38.9 GB) and rounded up. When even 4-bit
weights do not fit, the last resort streams the blocks: bf16 non-block weights plus one block resident, every
block read from disk again at every forward (slow, but it runs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from ltx_ane.errors import LtxAneError

GB = 1e9
ACTIVATION_BASE_BYTES = 1.0 * GB
ACTIVATION_BYTES_PER_TOKEN = 0.25e6
# Text encoding in the same process: Gemma's weights as stored (bf16 23.5 GB, an mlx-lm 4-bit copy ~6.6 GB) plus the
# activations of its 1,024-token pass.
GEMMA_ACTIVATION_BYTES = 1.5 * GB


STREAMING = "bf16, streaming blocks from disk"


@dataclass(frozen=True)
class MemoryPlan:
    precision: str  # "bf16", "fp16", "fp32", "8-bit", "4-bit" or STREAMING
    quantize_bits: int | None
    transformer_bytes: float
    peak_bytes: float
    available_bytes: float
    available_source: str

    @property
    def stream_blocks(self) -> bool:
        return self.precision == STREAMING

    def dtype(self, requested: str) -> str:
        """The compute dtype to load the transformer in: the one asked for, except when streaming (bf16)."""
        return "bf16" if self.stream_blocks else requested

    def describe(self) -> str:
        return (f"memory plan: transformer {self.precision} ({self.transformer_bytes / GB:.1f} GB of weights), "
                f"peak ~{self.peak_bytes / GB:.1f} GB of {self.available_bytes / GB:.1f} GB usable "
                f"({self.available_source})")


def available_memory() -> tuple[float, str]:
    """Bytes a model may use here: Metal's recommended working set on a Mac, else 90 % of physical memory."""
    if sys.platform == "darwin":
        import mlx.core as mx

        info = mx.device_info()
        size = info.get("max_recommended_working_set_size") or info.get("memory_size")
        if size:
            return float(size), "Metal's recommended working set"
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return 0.9 * pages * page_size, "90% of physical memory"


@dataclass(frozen=True)
class TransformerParameters:
    quantisable: int  # in the blocks' Linear layers' weights (what 8-/4-bit quantise)
    total: int
    one_block: int
    blocks: int


def transformer_parameters(config) -> TransformerParameters:
    """The transformer's parameter counts, without allocating."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ltx_ane.models.transformer.model import LTXModel

    model = LTXModel(config)  # parameters stay lazy: nothing is drawn or allocated
    quantisable = 0
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear) and path.startswith("transformer_blocks."):
            quantisable += module.weight.size
    total = sum(p.size for _, p in tree_flatten(model.parameters()))
    one_block = sum(p.size for _, p in tree_flatten(model.transformer_blocks[0].parameters()))
    return TransformerParameters(quantisable, total, one_block, len(model.transformer_blocks))


def weight_bytes(parameters: TransformerParameters, precision: str, group_size: int = 64) -> float:
    """The resident weights at ``precision`` (streaming: the non-block weights and one block, bf16)."""
    p = parameters
    if precision in ("8-bit", "4-bit"):
        bits = int(precision[0])
        return p.quantisable * (bits / 8 + 4 / group_size) + (p.total - p.quantisable) * 2
    if precision == STREAMING:
        return (p.total - (p.blocks - 1) * p.one_block) * 2
    return p.total * (4 if precision == "fp32" else 2)


def prepared_text_bytes(config, prompts: int, text_tokens: int = 1024) -> float:
    """The text keys and values every block keeps per prepared prompt (bf16), ``pipelines.denoise``."""
    video = config.num_attention_heads * config.attention_head_dim
    audio = config.audio_num_attention_heads * config.audio_attention_head_dim
    return prompts * config.num_layers * text_tokens * 2 * (video + audio) * 2


def gemma_bytes(gemma_dir) -> float:
    """What encoding a prompt in this process needs: Gemma's stored weights plus one pass's activations."""
    from pathlib import Path

    return sum(p.stat().st_size for p in Path(gemma_dir).glob("*.safetensors")) + GEMMA_ACTIVATION_BYTES


def plan_memory(config, dtype: str, quantize: str | None, video_tokens: int, text_bytes: float = 0.0,
                available: tuple[float, str] | None = None, prompts: int = 1) -> MemoryPlan:
    """The first precision that fits (``text_bytes``: the text encoder's phase, when it runs here), from the one
    asked for (``quantize`` "8"/"4", else the dtype, then 8-bit, then 4-bit, then streaming the blocks from disk);
    an error naming the need and the machine's memory when nothing fits."""
    available_bytes, source = available or available_memory()
    parameters = transformer_parameters(config)
    activations = ACTIVATION_BASE_BYTES + ACTIVATION_BYTES_PER_TOKEN * video_tokens + prepared_text_bytes(config, prompts)
    if quantize:
        candidates = [f"{quantize}-bit"]
    else:
        candidates = [dtype, "8-bit", "4-bit", STREAMING]
    smallest = None
    for precision in candidates:
        weights = weight_bytes(parameters, precision)
        peak = max(weights + activations, text_bytes)
        smallest = (precision, peak)
        if peak <= available_bytes:
            bits = int(precision[0]) if precision in ("8-bit", "4-bit") else None
            return MemoryPlan(precision, bits, weights, peak, available_bytes, source)
    precision, peak = smallest
    raise LtxAneError(f"not enough memory: the transformer at {precision} needs ~{peak / GB:.1f} GB for "
                      f"{video_tokens} video tokens, and this machine offers {available_bytes / GB:.1f} GB ({source})"
                      + ("; try a smaller size or fewer frames" if precision == STREAMING
                         else "; leave out --quantize to stream the blocks from disk" if quantize
                         else "; try --quantize 4"))
