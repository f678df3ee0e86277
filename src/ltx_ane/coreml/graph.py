"""Read a Core ML package's program and check it against the public Neural Engine constraints (any OS).

Only the package's spec (a small protobuf) is read, never the weights, so inspecting a 1 GB package is instant.
Needs coremltools for the protobuf definitions, nothing else.

What the ANE is publicly known to need (Apple's Core ML docs and WWDC talks, coremltools docs, Apple's
ml-ane-transformers notes, and reverse-engineering write-ups; partly unofficial):

- fp16 compute only; anything in fp32 runs on the GPU/CPU;
- tensors of rank <= 5 (a Core ML limit), best rank 4 channels-first; no public source shows a 5-D tensor or a
  Conv3d placed on the ANE;
- H and W <= 16384, C <= 65536;
- buffers pad the last axis to 64 bytes, so a short last axis wastes memory and bandwidth;
- a flexible (range) input shape runs on the ANE only at its default; gather and shape ops do not run there;
- the op types in ``ANE_OPS`` are the layer types the public material reports as ANE-resident (convolution,
  elementwise arithmetic and activations, reductions, reshape/transpose/concat/slice/pad, pixel shuffle,
  normalization). An op outside it is flagged as unverified, not as impossible.

The report flags what these rules say will not run (``blocker``) or will run slowly (``warning``). Per-op device
placement is only known on a Mac (MLComputePlan, see runtime.py).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltx_ane.errors import LtxAneError

# The ops our rank-4 rewrites may produce; every converted program (but the conv3d variant) must use only these.
ANE_OPS = frozenset({
    "const", "conv", "add", "sub", "mul", "real_div", "inverse", "maximum", "clip", "abs", "rsqrt", "sqrt",
    "silu", "sigmoid", "reduce_mean", "reduce_max", "reduce_sum", "batch_norm", "instance_norm", "layer_norm",
    "reshape", "transpose", "concat", "slice_by_index", "pad", "pixel_shuffle", "pixel_unshuffle",
    "space_to_depth", "depth_to_space", "tile", "squeeze", "expand_dims", "identity",
})
# Ops that unpack compressed weights at load time (ct.optimize.coreml); they are not compute.
CONSTEXPR_OPS = frozenset({
    "constexpr_lut_to_dense", "constexpr_affine_dequantize", "constexpr_blockwise_shift_scale",
    "constexpr_sparse_to_dense", "constexpr_cast",
})
DTYPE_BYTES = {"FLOAT16": 2, "FLOAT32": 4, "FLOAT64": 8, "BFLOAT16": 2, "INT8": 1, "UINT8": 1, "INT16": 2,
               "UINT16": 2, "INT32": 4, "UINT32": 4, "INT64": 8, "UINT64": 8, "BOOL": 1}
ANE_MAX_HW = 16384
ANE_MAX_C = 65536
ANE_LAST_AXIS_BYTES = 64


@dataclass
class Tensor:
    name: str
    op: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES.get(self.dtype, 4)

    @property
    def padded_nbytes(self) -> int:
        """Bytes once the last axis is padded to 64 bytes, as ANE buffers are."""
        if not self.shape:
            return self.nbytes
        item = DTYPE_BYTES.get(self.dtype, 4)
        row = math.ceil(self.shape[-1] * item / ANE_LAST_AXIS_BYTES) * ANE_LAST_AXIS_BYTES
        return math.prod(self.shape[:-1]) * row


@dataclass
class Flag:
    code: str
    severity: str  # "blocker": the public constraints say it will not run on the ANE; "warning": slow there
    message: str
    count: int
    example: str = ""


@dataclass
class FunctionReport:
    name: str
    inputs: dict[str, list]  # name -> [dtype, shape]
    outputs: dict[str, list]
    op_counts: dict[str, int]
    ranks: dict[int, int]  # rank -> number of op outputs (consts excluded)
    dtypes: dict[str, int]
    largest_activation: dict
    largest_weight: dict
    last_axis_sizes: dict[int, int]  # last-axis size -> number of activations
    conv_flops: int
    activation_bytes: int  # sum of all op outputs: a floor on memory traffic
    padded_activation_bytes: int
    flags: list[Flag] = field(default_factory=list)

    @property
    def max_rank(self) -> int:
        return max(self.ranks) if self.ranks else 0


@dataclass
class PackageReport:
    path: str
    size_bytes: int
    weight_bytes: int
    default_function: str
    metadata: dict[str, str]
    functions: list[FunctionReport]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)


def _tensor_type(value_type) -> tuple[str, tuple[int, ...]] | None:
    from coremltools.proto import MIL_pb2

    if not value_type.HasField("tensorType"):
        return None
    tt = value_type.tensorType
    dims = []
    for d in tt.dimensions:
        dims.append(d.constant.size if d.HasField("constant") else -1)
    return MIL_pb2.DataType.Name(tt.dataType), tuple(dims)


def _walk(operations):
    for op in operations:
        yield op
        for block in op.blocks:
            yield from _walk(block.operations)


def _io(features) -> dict[str, list]:
    out = {}
    for f in features:
        t = f.type
        if t.HasField("multiArrayType"):
            from coremltools.proto import FeatureTypes_pb2

            shape = list(t.multiArrayType.shape)
            flexible = t.multiArrayType.WhichOneof("ShapeFlexibility")
            out[f.name] = [FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(t.multiArrayType.dataType), shape] + ([flexible] if flexible else [])
        else:
            out[f.name] = [t.WhichOneof("Type"), []]
    return out


def analyze_function(name: str, function, description) -> FunctionReport:
    block = function.block_specializations[function.opset]
    tensors: dict[str, Tensor] = {}
    ops = list(_walk(block.operations))
    counts = Counter(op.type for op in ops)
    activations, weights = [], []
    conv_flops = 0
    for op in ops:
        for out in op.outputs:
            typed = _tensor_type(out.type)
            if typed is None:
                continue
            t = Tensor(out.name, op.type, *typed)
            tensors[out.name] = t
            (weights if op.type == "const" or op.type in CONSTEXPR_OPS else activations).append(t)
        if op.type == "conv" and "weight" in op.inputs and op.outputs:
            w = tensors.get(op.inputs["weight"].arguments[0].name)
            y = tensors.get(op.outputs[0].name)
            if w is not None and y is not None:
                conv_flops += 2 * math.prod(y.shape) * math.prod(w.shape[1:])
    # A compressed weight is counted once, as the dense tensor its constexpr op produces.
    packed = {arg.name for op in ops if op.type in CONSTEXPR_OPS for inp in op.inputs.values() for arg in inp.arguments}
    weights = [t for t in weights if t.name not in packed]
    weights = [t for t in weights if t.rank >= 1 and math.prod(t.shape) > 1]
    big_act = max(activations, key=lambda t: t.nbytes, default=None)
    big_w = max(weights, key=lambda t: t.nbytes, default=None)
    report = FunctionReport(
        name=name,
        inputs=_io(description.input),
        outputs=_io(description.output),
        op_counts=dict(counts.most_common()),
        ranks=dict(sorted(Counter(t.rank for t in activations).items())),
        dtypes=dict(Counter(t.dtype for t in activations).most_common()),
        largest_activation=_describe(big_act),
        largest_weight=_describe(big_w),
        last_axis_sizes=dict(sorted(Counter(t.shape[-1] for t in activations if t.shape).items())),
        conv_flops=conv_flops,
        activation_bytes=sum(t.nbytes for t in activations),
        padded_activation_bytes=sum(t.padded_nbytes for t in activations),
    )
    report.flags = ane_flags(report, activations, ops)
    return report


def _describe(t: Tensor | None) -> dict:
    if t is None:
        return {}
    return {"name": t.name, "op": t.op, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes, "padded_bytes": t.padded_nbytes}


def ane_flags(report: FunctionReport, activations: list[Tensor], ops) -> list[Flag]:
    flags = []

    def add(code, severity, message, items, show=lambda t: f"{t.op} {t.name} {list(t.shape)}"):
        items = list(items)
        if items:
            flags.append(Flag(code, severity, message, len(items), show(items[0])))

    add("rank>5", "blocker", "tensors above rank 5: Core ML cannot run them at all", [t for t in activations if t.rank > 5])
    add("rank5", "blocker", "rank-5 tensors: no public source shows a 5-D tensor or Conv3d placed on the ANE (expect GPU/CPU)",
        [t for t in activations if t.rank == 5])
    add("fp32", "blocker", "fp32 tensors: the ANE computes in fp16 only",
        [t for t in activations if t.dtype in ("FLOAT32", "FLOAT64")])
    add("int", "warning", "integer/bool tensors (shape arithmetic, gather indices): such ops run on the CPU",
        [t for t in activations if t.dtype.startswith(("INT", "UINT", "BOOL"))])
    other = Counter(op.type for op in ops if op.type not in ANE_OPS and op.type not in CONSTEXPR_OPS)
    if other:
        flags.append(Flag("ops", "warning", "op types not in the ANE allowlist (unverified; may fall back to the CPU/GPU): "
                          + ", ".join(f"{k} x{v}" for k, v in other.most_common()), sum(other.values()), next(iter(other))))
    add("size", "blocker", f"H or W above {ANE_MAX_HW} or C above {ANE_MAX_C}",
        [t for t in activations if t.rank >= 3 and (max(t.shape[-2:]) > ANE_MAX_HW or t.shape[-3] > ANE_MAX_C)])
    flexible = [name for name, (_, _, *rest) in report.inputs.items() if rest]
    if flexible:
        flags.append(Flag("flexible", "warning", "flexible input shapes run on the ANE only at their default shape", len(flexible), flexible[0]))
    narrow = [t for t in activations if t.shape and t.nbytes >= 1 << 20 and t.padded_nbytes >= 2 * t.nbytes]
    add("last-axis", "warning", "tensors of 1 MB or more whose last axis pads to at least twice their size in ANE buffers (64-byte rows)",
        narrow, lambda t: f"{t.op} {t.name} {list(t.shape)}: {t.nbytes} -> {t.padded_nbytes} bytes")
    return flags


def package_weight_bytes(path: Path) -> int:
    weights = path / "Data" / "com.apple.CoreML" / "weights"
    return sum(p.stat().st_size for p in weights.rglob("*") if p.is_file()) if weights.exists() else 0


def inspect_package(path: str | Path) -> PackageReport:
    """Everything ``ltx-ane inspect`` shows, as data."""
    from ltx_ane.coreml.deps import import_coremltools

    ct = import_coremltools()
    path = Path(path)
    if not path.exists():
        raise LtxAneError(f"package not found: {path}")
    if not (path / "Manifest.json").exists():
        raise LtxAneError(f"{path} is not a Core ML package (no Manifest.json; a .mlpackage folder is expected)")
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as e:  # protobuf and coremltools raise several types for damaged packages
        raise LtxAneError(f"cannot read {path}: {e}") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise LtxAneError(f"{path} is a {spec.WhichOneof('Type')} model; only ML programs are inspected")
    desc = spec.description
    program = spec.mlProgram
    if len(desc.functions):
        descriptions = {f.name: f for f in desc.functions}
        default = desc.defaultFunctionName
    else:
        descriptions = {"main": desc}
        default = "main"
    functions = [analyze_function(name, program.functions[name], descriptions[name]) for name in descriptions]
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return PackageReport(str(path), size, package_weight_bytes(path), default, dict(desc.metadata.userDefined), functions)


def format_report(report: PackageReport) -> str:
    from ltx_ane.io.checkpoint import human_bytes

    lines = [f"{report.path}: {human_bytes(report.size_bytes)} (weights {human_bytes(report.weight_bytes)}), "
             f"{len(report.functions)} function(s), default {report.default_function}"]
    meta = {k.removeprefix("ltx_ane."): v for k, v in report.metadata.items() if k != "ltx_ane.models.config"}
    if meta:
        lines.append("metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items() if v))
    for f in report.functions:
        io = "; ".join(f"{n} {v[0]} {v[1]}" for n, v in f.inputs.items()) + " -> " + "; ".join(f"{n} {v[0]} {v[1]}" for n, v in f.outputs.items())
        lines.append(f"\nfunction {f.name}: {io}")
        lines.append(f"  ops ({sum(f.op_counts.values())}): " + ", ".join(f"{k} {v}" for k, v in f.op_counts.items()))
        lines.append("  ranks: " + ", ".join(f"rank {k}: {v}" for k, v in f.ranks.items()) + "   dtypes: " + ", ".join(f"{k} {v}" for k, v in f.dtypes.items()))
        if f.largest_activation:
            a = f.largest_activation
            lines.append(f"  largest activation: {human_bytes(a['bytes'])} ({a['dtype']} {a['shape']} from {a['op']}; {human_bytes(a['padded_bytes'])} padded to 64-byte rows)")
        if f.largest_weight:
            w = f.largest_weight
            lines.append(f"  largest weight: {human_bytes(w['bytes'])} ({w['dtype']} {w['shape']})")
        lines.append("  last-axis sizes: " + ", ".join(f"{k} x{v}" for k, v in f.last_axis_sizes.items()))
        lines.append(f"  conv work {f.conv_flops / 1e9:.2f} GFLOP; activations written {human_bytes(f.activation_bytes)} "
                     f"({human_bytes(f.padded_activation_bytes)} with ANE row padding)")
        if f.flags:
            for flag in f.flags:
                lines.append(f"  {flag.severity.upper()} [{flag.code}] {flag.message} ({flag.count}; e.g. {flag.example})")
        else:
            lines.append("  ANE constraints: nothing flagged")
    return "\n".join(lines)
