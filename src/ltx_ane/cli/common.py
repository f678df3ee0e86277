"""Argument groups shared by subcommands, and the closing report line."""

from __future__ import annotations

import argparse
import resource
import sys
import time

from ltx_ane.models.loading import DTYPES, Source
from ltx_ane.io.checkpoint import human_bytes


def add_vae_source(parser: argparse.ArgumentParser, required_checkpoint: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--vae", metavar="CKPT", help="VAE checkpoint: a .safetensors file (full LTX-2 checkpoint or "
                       "VAE-only) or a Hugging Face repo id in the local cache (org/name or org/name:file.safetensors)")
    group.add_argument("--config", metavar="FILE", help="config JSON in the form checkpoints embed, or a preset "
                       "name (ltx2, ltx23); overrides the checkpoint's metadata")
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
    from ltx_ane.errors import LtxAneError

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
