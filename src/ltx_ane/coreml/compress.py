"""Weight compression through ``ct.optimize.coreml``, and its error measured through the torch model.

Modes: ``int8`` (linear symmetric, per output channel), ``palette6`` and ``palette4`` (6-/4-bit k-means
look-up tables, one per group of 16 output channels). coremltools refuses to compress
multifunction models, so each function's program is compressed before the functions are merged; the
compression is deterministic, so the merged package still stores every weight once.

The error is measured where it arises: the decompressed weights (read back from the compressed program) are put
into the rewritten torch model, which then runs in fp32 against the original weights. Weights are matched to
torch parameters by their exact fp16 values, since coremltools renames them.
"""

from __future__ import annotations

import copy
import hashlib

from ltx_ane.errors import LtxAneError

MODES = ("int8", "palette6", "palette4")
# coremltools leaves tensors below this many elements uncompressed (its default); so do the measurements.
MIN_ELEMENTS = 2048


def _config(mode: str):
    import coremltools.optimize.coreml as cto

    if mode == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=MIN_ELEMENTS)
    elif mode == "palette6":
        # Grouped like palette4: per-tensor k-means at this size needs scikit-learn, while grouped tensors go
        # through the 1-D k-means that coremltools bundles.
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=6, granularity="per_grouped_channel", group_size=16, weight_threshold=MIN_ELEMENTS)
    elif mode == "palette4":
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=16, weight_threshold=MIN_ELEMENTS)
    else:
        raise LtxAneError(f"unknown compression {mode!r} (choose from {', '.join(MODES)})")
    return cto.OptimizationConfig(global_config=op)


def compress_mlmodel(mlmodel, mode: str):
    """A compressed copy of a single-function ML program."""
    import coremltools.optimize.coreml as cto

    config = _config(mode)
    if mode == "int8":
        return cto.linear_quantize_weights(mlmodel, config)
    return cto.palettize_weights(mlmodel, config)


def _program(mlmodel):
    """The MIL program of an in-memory model (coremltools keeps it after convert and after compression)."""
    prog = getattr(mlmodel, "_mil_program", None)
    if prog is None:
        raise LtxAneError("the model has no MIL program in memory to read weights from")
    return prog


def _key(array) -> str:
    import numpy as np

    a = np.ascontiguousarray(array, dtype=np.float16)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def weight_pairs(original, compressed) -> list[tuple]:
    """(original fp16 weight, decompressed weight) for every tensor the compression replaced, matched by name."""
    import numpy as np

    before = {}
    for function in _program(original).functions.values():
        for op in function.operations:
            if op.op_type == "const" and op.outputs[0].val is not None and np.size(op.outputs[0].val) >= MIN_ELEMENTS:
                before[op.outputs[0].name] = op.outputs[0].val
    pairs = []
    for function in _program(compressed).functions.values():
        for op in function.operations:
            if op.op_type.startswith("constexpr_"):
                name = _original_name(op.outputs[0].name, before)
                if name is not None:
                    pairs.append((before[name], np.asarray(op.materialized_val_inference(), dtype=np.float32)))
    return pairs


def _original_name(name: str, known) -> str | None:
    """coremltools names a compressed 'w' like 'w_quantized' or 'w_palettized': strip suffixes until known."""
    while name:
        if name in known:
            return name
        if "_" not in name:
            return None
        name = name.rsplit("_", 1)[0]
    return None


def with_decompressed_weights(model, pairs):
    """A copy of the torch model with every parameter that the compression replaced swapped for its decompressed
    value. Returns (model, number of tensors replaced, number of compressed tensors not found in the model)."""
    import torch

    lookup = {_key(orig): dense for orig, dense in pairs}
    model = copy.deepcopy(model)
    replaced = 0
    with torch.no_grad():
        for param in list(model.parameters()) + list(model.buffers()):
            if param.numel() < MIN_ELEMENTS:
                continue
            dense = lookup.get(_key(param.detach().half().numpy()))
            if dense is not None and tuple(dense.shape) == tuple(param.shape):
                param.copy_(torch.from_numpy(dense))
                replaced += 1
    return model, replaced, len(lookup) - replaced


def compressed_psnr(model, x, original_mlmodel, compressed_mlmodel) -> tuple[float, int, int]:
    """PSNR (dB) of the torch model with decompressed weights against the original weights, both fp32."""
    import torch

    from ltx_ane.coreml.convert import psnr

    pairs = weight_pairs(original_mlmodel, compressed_mlmodel)
    if not pairs:
        raise LtxAneError("the compression replaced no weights (all tensors below its size threshold?)")
    decompressed, replaced, missing = with_decompressed_weights(model, pairs)
    if replaced == 0:
        raise LtxAneError("none of the compressed weights could be matched to the torch model's parameters")
    with torch.no_grad():
        value = psnr(decompressed(x), model(x))
    return value, replaced, missing
