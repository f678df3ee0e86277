"""Argument groups shared by subcommands (model source, tiling, backends, output), writing decoded frames, and the
closing report line."""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from pathlib import Path

from ltx_ane.models.config import MODEL_PRESETS
from ltx_ane.models.loading import DTYPES, Source
from ltx_ane.errors import LtxAneError
from ltx_ane.io.checkpoint import human_bytes


def add_vae_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--vae", metavar="CKPT", help="VAE checkpoint: a .safetensors file (full LTX-2 checkpoint or "
                       "VAE-only) or a Hugging Face repo id in the local cache (org/name or org/name:file.safetensors)")
    group.add_argument("--config", metavar="FILE", help="config JSON in the form checkpoints embed, or a preset "
                       f"name ({', '.join(MODEL_PRESETS)}); overrides the checkpoint's metadata")
    group.add_argument("--random-weights", action="store_true", help="build the real architecture with random "
                       "weights (for trying the pipeline and timing; the output is noise)")
    add_dtype(group)


def add_dtype(group) -> None:
    group.add_argument("--dtype", choices=DTYPES, default="bf16", help="compute dtype (default: bf16)")


def vae_source(args) -> Source:
    return Source(checkpoint=args.vae, config_file=args.config, random_weights=args.random_weights)


def add_tiling(parser: argparse.ArgumentParser) -> None:
    from ltx_ane.pipelines.video import DEFAULT_BUDGET_GB

    group = parser.add_argument_group("tiling")
    group.add_argument("--tiling", default="auto", metavar="auto|off|FxHxW", help="auto: tile size from the memory "
                       "budget (default); off: one piece; or a pixel tile such as 65x512x512 (frames 8k+1, sizes "
                       "multiples of 32)")
    group.add_argument("--memory-budget", type=float, default=DEFAULT_BUDGET_GB, metavar="GB",
                       help=f"working memory for --tiling auto (default {DEFAULT_BUDGET_GB:g})")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_grid(text: str) -> tuple[int, int, int]:
    """'FxHxW' of positive integers."""
    try:
        grid = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        grid = ()
    if len(grid) != 3 or min(grid) < 1:
        raise LtxAneError(f"{text!r} is not FxHxW with positive integers, e.g. 2x2x3")
    return grid


def check_output_dir(path) -> None:
    """Fail before any work if the output cannot be written."""
    from ltx_ane.io.latents import check_writable

    check_writable(path)


def add_output(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help=help_text)


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


# ------------------------------------------------------------------------------------------------ backends


def add_backend_args(parser, components: tuple[str, ...]) -> None:
    group = parser.add_argument_group("backends")
    group.add_argument("--backend", default="auto", metavar="SPEC", help="auto (the bench profile's fastest backend "
                       "that passed parity; MLX without a profile or off macOS), mlx, torch (ltx-core reference), "
                       "coreml[:CPU_AND_NE|CPU_AND_GPU|ALL|CPU_ONLY], or several joined by commas to run tiles on "
                       "all at once (e.g. mlx,coreml:CPU_AND_NE)" + (" ; default for every component" if len(components) > 1 else ""))
    if len(components) > 1:
        for c in components:
            group.add_argument(f"--{c}-backend", metavar="SPEC", help=f"backend for the {c} (default: --backend)")
    group.add_argument("--profile", metavar="FILE", help="bench profile JSON (default ~/.cache/ltx-ane/profile.json)")
    group.add_argument("--package", action="append", default=[], metavar="FILE", help="Core ML package made by "
                       "`ltx-ane convert` (its component is read from it); repeat for several components")
    group.add_argument("--allow-ungated-package", action="store_true", help="run an explicitly chosen Core ML "
                       "package that carries no measured PSNR (converted with --no-fp16-check); never used by auto")
    group.add_argument("--max-in-flight", type=positive_int, metavar="N", help="tiles dispatched but not yet "
                       "blended when several backends run (default: 2 per backend); bounds memory")


class BackendContext:
    """The profile and packages of one command, and the per-component choice (printed as it is made)."""

    def __init__(self, args, log=print):
        from ltx_ane.runtime.profile import load_profile

        self.args, self.log = args, log
        self.profile = load_profile(args.profile) if args.profile else load_profile()
        self.packages = self._packages(args.package)
        self.choices = []

    @staticmethod
    def _packages(paths) -> dict[str, str]:
        out: dict[str, str] = {}
        for path in paths:
            from ltx_ane.coreml.package import META_PREFIX, read_metadata

            if not Path(path).exists():
                raise LtxAneError(f"Core ML package {path} does not exist")
            component = read_metadata(path).get(META_PREFIX + "component")
            if not component:
                raise LtxAneError(f"{path} was not made by `ltx-ane convert` (no component in its metadata)")
            if component in out:
                raise LtxAneError(f"two Core ML packages for the {component}: {out[component]} and {path}")
            out[component] = str(path)
        return out

    def precheck(self, components) -> None:
        """Explicit choices that cannot work here (Core ML off macOS or without a package) fail before loading."""
        from ltx_ane.runtime.choice import choose

        for c in components:
            if self.spec(c).strip().lower() != "auto":
                choose(c, self.spec(c), None, None, self.packages.get(c))

    def spec(self, component: str) -> str:
        return getattr(self.args, f"{component}_backend", None) or self.args.backend

    def choose(self, component: str, tile, model):
        """The choice for one component of ``model`` (whose config, weights and dtype a profile entry must share)."""
        from ltx_ane.runtime.backends import run_identity
        from ltx_ane.runtime.choice import choose

        choice = choose(component, self.spec(component), tile, self.profile, self.packages.get(component),
                        identity=lambda: run_identity(model))
        self.choices.append(choice)
        self.log(f"backend {choice.describe()}")
        return choice

    def backends(self, component: str, tile, model, stats=None):
        """None when the choice is MLX alone (the plain path), else the backend objects."""
        from ltx_ane.runtime.backends import build

        choice = self.choose(component, tile, model)
        if choice.names == ["mlx"] and component in ("decoder", "encoder"):
            return None
        return build(choice, model, stats, allow_ungated=self.args.allow_ungated_package, log=self.log)


def check_backend_flags(args, components) -> None:
    """Reject malformed backend names before any model loads."""
    from ltx_ane.runtime.choice import parse_spec

    parse_spec(args.backend)
    for c in components:
        value = getattr(args, f"{c}_backend", None)
        if value is not None:
            parse_spec(value)


def throughput_line(component: str, throughput) -> str | None:
    if throughput is None or len(throughput.backends) < 2:
        return None
    return f"{component} throughput: {throughput.summary()}"

def to_pixels(chunk):
    """A decoded (B, f, H, W, 3) chunk in [-1, 1] (MLX or NumPy, any float dtype) -> uint8 NumPy frames, rounded in
    float32: fp16 arithmetic near 255 is coarser than one level."""
    import mlx.core as mx
    import numpy as np

    from ltx_ane.runtime.backends import MLX_LOCK

    with MLX_LOCK:
        chunk = mx.array(chunk) if isinstance(chunk, np.ndarray) else chunk
        scaled = mx.clip((chunk.astype(mx.float32) + 1.0) * 127.5 + 0.5, 0, 255)
        return np.array(scaled.astype(mx.uint8))


def numbered_outputs(out: Path, count: int) -> list[Path]:
    """One output per video (batch item or prompt): ``out`` itself for one, else ``out_1``, ``out_2``, ..."""
    return [out] if count == 1 else [out.with_name(f"{out.stem}_{i + 1}{out.suffix}") for i in range(count)]


def write_frames(chunks, out: Path, shape: tuple[int, ...], fps: float, crf: int, audio=None) -> list[Path]:
    """Stream decoded (B, f, H, W, 3) chunks in [-1, 1] into one MP4 per batch item (with its ``audio`` track when
    given, one ``io.audio.AudioTrack`` per item), or into one .safetensors of raw float32 frames (``shape`` is the
    whole (B, 3, F, H, W) video)."""
    # Closed on any exit (Ctrl-C included), so tile workers stop now, not when the traceback is collected.
    with contextlib.closing(chunks) if hasattr(chunks, "close") else contextlib.nullcontext():
        return _write_chunks(chunks, out, shape, fps, crf, audio)


def _write_chunks(chunks, out: Path, shape, fps, crf, audio) -> list[Path]:
    import numpy as np

    from ltx_ane.io.latents import RawVideoWriter
    from ltx_ane.io.video import Mp4Writer
    from ltx_ane.runtime.backends import MLX_LOCK

    if out.suffix == ".safetensors":
        with RawVideoWriter(out, shape, fps) as writer:
            for chunk in chunks:
                with MLX_LOCK:
                    frames = np.array(chunk)
                writer.write(frames.transpose(0, 4, 1, 2, 3))
        return [out]
    outputs = numbered_outputs(out, shape[0])
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(Mp4Writer(o, fps, crf=crf, audio=audio[i] if audio else None))
                   for i, o in enumerate(outputs)]
        for chunk in chunks:
            pixels = to_pixels(chunk)
            for i, writer in enumerate(writers):
                writer.write(pixels[i])
    return outputs


class Report:
    """Times a command and prints its last line: elapsed time and peak memory."""

    def __init__(self):
        self.start = time.perf_counter()

    def finish(self, what: str) -> None:
        elapsed = time.perf_counter() - self.start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        parts = [f"{what} in {elapsed:.2f} s", f"peak process memory {human_bytes(rss)}"]
        if "mlx.core" in sys.modules:
            import mlx.core as mx

            parts.append(f"peak MLX memory {human_bytes(mx.get_peak_memory())}")
        print(", ".join(parts))
