"""Convert the four components to Core ML ``.mlpackage`` files for the Neural Engine.

One ``convert_<component>`` function each, sharing ``convert_loaded``:

1. build the ltx-core reference with the checkpoint's config and weights (or random weights);
2. substitute the ANE-layout rewrite (the ``rewrites`` package);
3. check fp16 against fp32 in torch and refuse a component whose PSNR is below the bar;
4. trace and convert once per tile shape (static shapes: what the ANE runs), then merge the programs into one
   multifunction package, one function per tile shape, weights stored once;
5. write the metadata (component, hashes, tiles, variant, versions) and move the package into place atomically.

A package is named by a hash of everything that determines it (weights, config, tiles, variant, precision,
coremltools and ltx-ane versions), so converting again with the same inputs reuses it, and any change gives a
new name. Work happens in a hidden ``.partial-*`` folder in the output directory; only a finished package is
ever renamed to ``*.mlpackage``.

The upscalers' GroupNorm spans every frame of the clip, so their "tiles" are whole clips (see ``TileShape``).
That is the choice between converting at the full latent shape and taking the statistics as inputs computed on
the MLX side: statistics as inputs would mean cutting the network at each of its 17 GroupNorms (each one's
statistics depend on everything before it), 18 programs with a host round trip between each; at full shape the
tensors stay small (a 121-frame 512x768 clip's latent is 16x16x24; the spatial upscaler's activations are about
50 MB in fp16, 150 MB for a stacked conv input), and the result is exactly ltx-core's.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from ltx_ane import __version__
from ltx_ane.coreml.package import (weights_digest, PACKAGE_MIN_PSNR_DB, FORMAT_VERSION, META_PREFIX, clean_stale_partials,
                                    package_size, read_metadata, write_metadata)
from ltx_ane.coreml.rewrites import Variant, rewrite
from ltx_ane.coreml.tiles import TileShape, tiler_tiles
from ltx_ane.errors import LtxAneError
from ltx_ane.models import registry
from ltx_ane.models.config import config_hash
from ltx_ane.models.loading import Source

PRECISIONS = ("fp16", "fp32")


# --------------------------------------------------------------------------------------- loading components


@dataclass(frozen=True)
class Geometry:
    """How a component's program input relates to the video: scales, program input channels, patch size."""

    time_scale: int
    space_scale: int
    input_channels: int  # channels of the program input (latent channels, or 3*patch^2 for the encoder)
    patch_size: int = 1


def _vae_geometry(cfg) -> Geometry:
    return Geometry(cfg.time_scale, cfg.space_scale, cfg.latent_channels, cfg.patch_size)


def _encoder_geometry(cfg) -> Geometry:
    return Geometry(cfg.time_scale, cfg.space_scale, cfg.in_channels * cfg.patch_size**2, cfg.patch_size)


# One entry per calling convention (models.registry's ``io``): the program's geometry from the parsed config, and
# its input and output names. Upscalers work on the LTX-2 VAE's latents: 8x in time, 32x in space.
GEOMETRY = {
    "decode": _vae_geometry,
    "encode": _encoder_geometry,
    "upsample": lambda cfg: Geometry(8, 32, cfg.in_channels),
}
IO_NAMES = {"decode": ("latent", "frames"), "encode": ("frames", "latent"), "upsample": ("latent", "latent_x2")}


@dataclass
class Loaded:
    """An ltx-core component ready to convert, with what identifies it."""

    component: str
    module: object  # the ltx-core torch module, fp32
    config: dict  # raw config, in the form checkpoints embed
    weights_hash: str
    source: str
    geometry: Geometry
    # What the runtime compares with the model it runs (package.weights_digest): the weights an MLX model holds.
    weights_digest: str = ""

    @property
    def io(self) -> str:
        return registry.spec(self.component).io


def _torch_state_hash(module) -> str:
    """A digest of every tensor the module holds (names, shapes, fp32 values)."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().float().contiguous()
        h.update(f"{name}:{list(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Plan:
    """What a component is before any weights are read: its config, checkpoint and geometry (cheap to make)."""

    component: str
    source: Source
    config: dict
    path: Path | None
    geometry: Geometry

    def check_tiles(self, tiles: list[TileShape]) -> None:
        if not tiles:
            raise LtxAneError("no tile shape given: pass --tile FRAMESxHEIGHTxWIDTH (one or more)")
        for tile in tiles:
            tile.check(self.component, self.geometry.time_scale, self.geometry.space_scale)


def plan_component(component: str, source: Source) -> Plan:
    """Resolve the config and checkpoint of a component and validate them, without building anything."""
    spec = registry.spec(component)
    raw, path = spec.resolve(source)
    return Plan(component, source, raw, path, GEOMETRY[spec.io](spec.config(raw)))


def build_component(plan: Plan, seed: int = 0) -> Loaded:
    """The ltx-core module of a plan, fp32, with the checkpoint's weights (or the reference's seeded random ones)."""
    from ltx_ane import reference
    from ltx_ane.coreml.deps import require_conversion

    require_conversion()
    spec = registry.spec(plan.component)
    if plan.source.random_weights:
        module = spec.reference(plan.config, seed)
    else:
        module = reference.from_checkpoint(plan.component, plan.path, plan.config)
    module = module.float().eval()
    skipped = spec.checkpoint_keys(plan.config).ignore
    digest = weights_digest((k, v.detach().float().numpy()) for k, v in module.state_dict().items() if not skipped(k))
    return Loaded(plan.component, module, plan.config, _torch_state_hash(module), plan.source.describe(), plan.geometry,
                  digest)


def load_component(component: str, source: Source, seed: int = 0) -> Loaded:
    return build_component(plan_component(component, source), seed)


# ----------------------------------------------------------------------------------------------- shapes, I/O


def input_shape(loaded: Loaded, tile: TileShape) -> tuple[int, int, int, int]:
    """The program input for a tile: frames on the batch axis, patchify left to the host."""
    g = loaded.geometry
    if loaded.io == "encode":
        return (tile.frames, g.input_channels, tile.height // g.patch_size, tile.width // g.patch_size)
    f, h, w = tile.latent(g.time_scale, g.space_scale)
    return (f, g.input_channels, h, w)


def example_input(component: str, shape: tuple[int, ...], seed: int):
    """Inputs in each component's working range: latents ~ N(0, 1), patchified video in [-1, 1]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if registry.spec(component).io == "encode":
        return torch.rand(shape, generator=g) * 2 - 1
    return torch.randn(shape, generator=g)


# ------------------------------------------------------------------------------------------ numerical safety


def psnr(test, ref) -> float:
    """PSNR in dB with the reference's value range as the peak (decoder output in [-1, 1] -> peak 2)."""
    import torch

    test, ref = test.double(), ref.double()
    mse = torch.mean((test - ref) ** 2).item()
    peak = (ref.max() - ref.min()).item()
    if not math.isfinite(mse):
        return float("-inf")
    if mse == 0:
        return float("inf")
    return 10 * math.log10(peak**2 / mse)


def check_tile(tile: TileShape, loaded: Loaded) -> TileShape:
    """Where the torch checks run: the tile, capped at 2 latent frames of 2x2 latents.

    torch's CPU fp16 convolutions are slow (a full-width decoder tile of 9x256x256 takes over ten minutes on two
    cores), and overflow depends on activation magnitudes, which the weights set, not on the tile's extent.
    2x2 latents is the least that reflect padding accepts.
    """
    g = loaded.geometry
    return TileShape(min(tile.frames, g.time_scale + 1), min(tile.height, 2 * g.space_scale), min(tile.width, 2 * g.space_scale))


def fp16_psnr(model, x) -> float:
    """Run the (rewritten) torch model in fp32 and in fp16 on the same input; PSNR of fp16 against fp32.

    torch's CPU fp16 kernels round every op's output to fp16 (elementwise ops compute in fp16; convs and
    reductions accumulate wider, as the ANE's do), so overflow such as PixelNorm's x^2 shows up as inf/NaN.
    """
    import torch

    with torch.no_grad():
        ref = model(x.float())
        half = copy.deepcopy(model).half()
        out = half(x.half()).float()
    del half
    return psnr(out, ref)


# ----------------------------------------------------------------------------------------------- conversion


@dataclass
class ConvertOptions:
    precision: str = "fp16"
    min_psnr: float = PACKAGE_MIN_PSNR_DB
    fp16_check: bool = True
    force: bool = False
    seed: int = 0
    compress: str | None = None  # None, or one of compress.MODES
    check_tile: TileShape | None = None  # where to run the torch checks (default: see check_tile())
    videos: tuple[TileShape, ...] = ()  # when set, tiles are what the tiler cuts these videos into (tiler_tiles)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))

    def __post_init__(self):
        from ltx_ane.coreml.compress import MODES

        if self.precision not in PRECISIONS:
            raise LtxAneError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        if self.compress is not None and self.compress not in MODES:
            raise LtxAneError(f"unknown compression {self.compress!r} (choose from {', '.join(MODES)})")


@dataclass
class ConvertResult:
    path: Path
    reused: bool
    seconds: float
    size_bytes: int
    fp16_psnr_db: float | None
    metadata: dict[str, str]
    compressed_psnr_db: float | None = None


def cache_key(loaded: Loaded, tiles: list[TileShape], variant: Variant, precision: str, ct_version: str, compress: str | None = None) -> str:
    identity = {
        "format": FORMAT_VERSION,
        "component": loaded.component,
        "config": config_hash(loaded.config),
        "weights": loaded.weights_hash,
        "tiles": [t.name for t in tiles],
        "variant": variant.name,
        "precision": precision,
        "compress": compress,
        "coremltools": ct_version,
        "ltx_ane": __version__,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _convert_one(ct, model, loaded: Loaded, tile: TileShape, precision: str, seed: int):
    """Trace at one static shape and convert to an ML program (not yet saved)."""
    import numpy as np
    import torch

    shape = input_shape(loaded, tile)
    example = example_input(loaded.component, shape, seed)
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    in_name, out_name = IO_NAMES[loaded.io]
    dtype = np.float16 if precision == "fp16" else np.float32
    try:
        return ct.convert(
            traced,
            inputs=[ct.TensorType(name=in_name, shape=shape, dtype=dtype)],
            outputs=[ct.TensorType(name=out_name, dtype=dtype)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.macOS15,
            skip_model_load=True,
        )
    except Exception as e:  # coremltools raises many types; the message is what the user needs
        message = " ".join(str(e).split())[:400]
        raise LtxAneError(f"coremltools could not convert the {loaded.component} at tile {tile.name}: {type(e).__name__}: {message}") from None


def convert_loaded(loaded: Loaded, tiles: Iterable[TileShape], out_dir: str | Path, variant: Variant = Variant(),
                   options: ConvertOptions | None = None, keep_reference: bool = True) -> ConvertResult:
    """Convert a loaded component at the given tile shapes into ``out_dir``; reuse an identical earlier package.

    ``keep_reference=False`` lets go of the ltx-core module once the rewrite has copied its weights (2-3 GB at
    full size), so the caller's ``loaded.module`` becomes None.
    """
    from ltx_ane.coreml.deps import require_conversion

    options = options or ConvertOptions()
    ct = require_conversion()
    start = time.perf_counter()
    tiles = sorted(set(tiles), key=lambda t: (t.frames * t.height * t.width, t))
    if not tiles:
        raise LtxAneError("no tile shape given: pass --tile FRAMESxHEIGHTxWIDTH (one or more)")
    for tile in tiles:
        tile.check(loaded.component, loaded.geometry.time_scale, loaded.geometry.space_scale)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LtxAneError(f"output {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(loaded, tiles, variant, options.precision, ct.__version__, options.compress)
    final = out_dir / f"{loaded.component}-{key}.mlpackage"
    clean_stale_partials(out_dir)

    if final.exists() and not options.force:
        try:
            meta = read_metadata(final)
        except LtxAneError:
            meta = {}
        if meta.get(META_PREFIX + "cache_key") == key:
            options.log(f"reusing {final} (same weights, config, tiles, variant and versions)")
            psnr_text = meta.get(META_PREFIX + "fp16_psnr_db")
            compressed_text = meta.get(META_PREFIX + "compressed_psnr_db")
            return ConvertResult(final, True, time.perf_counter() - start, package_size(final), float(psnr_text) if psnr_text else None,
                                 meta, float(compressed_text) if compressed_text else None)

    model = rewrite(loaded.module, loaded.component, variant)
    if not keep_reference and variant.conv != "conv3d":
        loaded.module = None
        gc.collect()
    shapes = [input_shape(loaded, t) for t in tiles]

    measured = compressed_db = None
    if options.precision == "fp16" and options.fp16_check:
        check = options.check_tile or check_tile(tiles[0], loaded)
        options.log(f"checking fp16 against fp32 in torch at {check.name} ...")
        measured = fp16_psnr(model, example_input(loaded.component, input_shape(loaded, check), options.seed))
        options.log(f"fp16 PSNR {measured:.1f} dB (bar {options.min_psnr:g} dB)")
        if not measured >= options.min_psnr:
            raise LtxAneError(
                f"the {loaded.component} in fp16 reaches only {measured:.1f} dB PSNR against fp32 "
                f"(below {options.min_psnr:g} dB), so its fp16 output is not trustworthy; the ANE runs fp16 only. "
                "Pass --precision fp32 to keep fp32 (Core ML then runs it on the GPU/CPU, never the ANE), "
                "or --min-psnr to lower the bar"
            )
    if options.precision == "fp32":
        options.log("note: fp32 packages never run on the Neural Engine (it computes in fp16 only)")

    partial = out_dir / f".partial-{key}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        merged = partial / "model.mlpackage"
        functions = {}
        desc = ct.utils.MultiFunctionDescriptor()
        for i, tile in enumerate(tiles):
            options.log(f"converting {loaded.component} at {tile.name} (input {list(shapes[i])}) ...")
            mlmodel = _convert_one(ct, model, loaded, tile, options.precision, options.seed)
            if options.compress:
                from ltx_ane.coreml.compress import compress_mlmodel, compressed_psnr

                options.log(f"compressing weights ({options.compress}) ...")
                compressed = compress_mlmodel(mlmodel, options.compress)
                if i == 0:  # every function holds the same weights: measure once
                    x = example_input(loaded.component, input_shape(loaded, options.check_tile or check_tile(tiles[0], loaded)), options.seed)
                    compressed_db, replaced, missing = compressed_psnr(model, x, mlmodel, compressed)
                    options.log(f"{options.compress} weights: PSNR {compressed_db:.1f} dB against the original weights "
                                f"(fp32 torch; {replaced} tensors replaced{f', {missing} not matched' if missing else ''})")
                    if compressed_db < options.min_psnr:
                        options.log(f"warning: below the {options.min_psnr:g} dB bar; check the output before trusting it")
                mlmodel = compressed
            single = merged if len(tiles) == 1 else partial / f"{tile.function_name}.mlpackage"
            mlmodel.save(str(single))
            del mlmodel
            gc.collect()
            if len(tiles) == 1:
                # Merging costs about two conversions (coremltools re-validates the whole program per pass),
                # so a one-tile package keeps its single function "main".
                functions[tile.name] = "main"
            else:
                desc.add_function(str(single), "main", tile.function_name)
                functions[tile.name] = tile.function_name
        if len(tiles) > 1:
            options.log(f"merging {len(tiles)} functions (weights stored once) ...")
            desc.default_function_name = tiles[0].function_name
            ct.utils.save_multifunction(desc, str(merged))
        in_name, out_name = IO_NAMES[loaded.io]
        metadata = {
            "component": loaded.component,
            "config_hash": config_hash(loaded.config),
            "config": json.dumps(loaded.config, sort_keys=True),
            "weights_hash": loaded.weights_hash,
            "weights_digest": loaded.weights_digest,
            "source": loaded.source,
            "tiles": json.dumps([t.name for t in tiles]),
            "functions": json.dumps({t.name: {"function": functions[t.name], "input": list(s)} for t, s in zip(tiles, shapes)}),
            "input_name": in_name,
            "output_name": out_name,
            "variant": variant.name,
            "precision": options.precision,
            "fp16_psnr_db": f"{measured:.2f}" if measured is not None else "",
            "compression": options.compress or "",
            "compressed_psnr_db": f"{compressed_db:.2f}" if compressed_db is not None else "",
            "coremltools_version": ct.__version__,
            "ltx_ane_version": __version__,
            "format_version": FORMAT_VERSION,
            "cache_key": key,
        }
        metadata = {META_PREFIX + k: v for k, v in metadata.items()}
        write_metadata(merged, metadata, f"LTX-2 {loaded.component} for Core ML ({variant.name}; tiles {', '.join(t.name for t in tiles)})")
        if final.exists():  # only with --force: replace the old package
            shutil.rmtree(final)
        os.replace(merged, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    seconds = time.perf_counter() - start
    return ConvertResult(final, False, seconds, package_size(final), measured, metadata, compressed_db)


def convert(component: str, source: Source, tiles, out_dir, variant: Variant = Variant(),
            options: ConvertOptions | None = None) -> ConvertResult:
    """Convert a registry component from its source at the given tile shapes (whole clips for the upscalers).

    Programs per calling convention: decode (F, 128, h, w) normalized latent -> (8(F-1)+1, 48, 8h, 8w) patchified
    frames; encode (F, 48, H/4, W/4) patchified frames -> ((F-1)/8+1, 128, H/32, W/32) normalized means; upsample
    an un-normalized latent clip (F, 128, h, w) -> its x2 form.
    """
    from ltx_ane.coreml.deps import require_conversion

    options = options or ConvertOptions()
    require_conversion()
    plan = plan_component(component, source)
    tiles = list(tiles)
    if options.videos:
        if not registry.spec(component).tiled:
            raise LtxAneError(f"--video is for the tiled decoder/encoder; the {component} upscaler's tiles are whole clips: pass them as --tile")
        plan.check_tiles(tiles)
        tiles = tiler_tiles(options.videos, tiles, plan.geometry.time_scale, plan.geometry.space_scale)
        options.log("tiles from the tiler: " + ", ".join(t.name for t in tiles))
    plan.check_tiles(tiles)  # before minutes of building and hashing a 1 GB model
    return convert_loaded(build_component(plan, options.seed), tiles, out_dir, variant, options, keep_reference=False)


CONVERTERS = {name: partial(convert, name) for name in registry.NAMES}
