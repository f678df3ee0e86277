"""The memory plan's choice of transformer precision, down to streaming the blocks from disk, at the 19B size."""

from __future__ import annotations

import pytest

from ltx_ane.errors import LtxAneError
from ltx_ane.models.config import load_preset
from ltx_ane.models.transformer.config import TransformerConfig
from ltx_ane.pipelines.memory import GB, STREAMING, plan_memory, transformer_parameters, weight_bytes

TOKENS = 6144


@pytest.fixture(scope="module")
def config():
    return TransformerConfig.from_dict(load_preset("ltx2"))


def plan(config, available: float, quantize: str | None = None):
    return plan_memory(config, "bf16", quantize, TOKENS, available=(available, "test"))


def test_each_precision_is_chosen_where_it_first_fits(config):
    bf16 = plan(config, 1e6 * GB)
    assert (bf16.precision, bf16.quantize_bits, bf16.stream_blocks) == ("bf16", None, False)
    four_bit = plan(config, 1e6 * GB, quantize="4")
    activations = four_bit.peak_bytes - four_bit.transformer_bytes
    streamed_weights = weight_bytes(transformer_parameters(config), STREAMING)
    assert streamed_weights < bf16.transformer_bytes / 20  # the non-block weights and one block of 48

    assert plan(config, four_bit.peak_bytes).precision == "4-bit"
    streamed = plan(config, four_bit.peak_bytes - 1)
    assert streamed.stream_blocks and streamed.quantize_bits is None
    assert streamed.transformer_bytes == streamed_weights
    assert streamed.peak_bytes == pytest.approx(streamed_weights + activations)
    assert streamed.dtype("fp32") == "bf16" and bf16.dtype("fp32") == "fp32"
    assert "transformer bf16, streaming blocks from disk" in streamed.describe()

    with pytest.raises(LtxAneError, match="at bf16, streaming blocks from disk needs .* try a smaller size"):
        plan(config, streamed.peak_bytes - 1)


def test_an_explicit_quantisation_is_not_replaced_by_streaming(config):
    four_bit = plan(config, 1e6 * GB, quantize="4")
    with pytest.raises(LtxAneError, match="at 4-bit needs .* leave out --quantize"):
        plan(config, four_bit.peak_bytes - 1, quantize="4")


@pytest.mark.parametrize("tokens, measured_gb", [(1536, 39.3), (6144, 40.2)])
def test_the_bf16_estimate_covers_the_measured_peak_of_a_denoising_step(config, tokens, measured_gb):
    """benchmarks/results/transformer-cuda-prepared-text.md, 'text prepared once' rows (a denoising step's forward,
    one prompt): the rule rounds the measured peak up, by less than a few GB."""
    estimate = plan_memory(config, "bf16", None, tokens, available=(1e6 * GB, "test")).peak_bytes / GB
    assert measured_gb <= estimate <= measured_gb + 3
