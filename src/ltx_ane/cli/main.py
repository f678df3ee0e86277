"""Entry point of ``ltx-ane``: dispatches to one module per subcommand and turns errors into one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from ltx_ane import __version__
from ltx_ane.errors import LtxAneError

# subcommand -> module with ``register(subparsers)``; modules import heavy libraries only when run.
COMMANDS = {
    "decode": "ltx_ane.cli.decode",
    "encode": "ltx_ane.cli.encode",
    "info": "ltx_ane.cli.info",
    "upsample": "ltx_ane.cli.upsample",
    "convert": "ltx_ane.cli.convert",
    "inspect": "ltx_ane.cli.inspect",
    "bench": "ltx_ane.cli.bench",
    "render": "ltx_ane.cli.render",
    "encode-prompt": "ltx_ane.cli.encode_prompt",
    "generate": "ltx_ane.cli.generate",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), not a usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ltx-ane", description="LTX-2 video generation and its VAE and latent upscalers with MLX and Core ML.")
    parser.add_argument("--version", action="version", version=f"ltx-ane {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors and --help: argparse has already printed its line
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "dtype", None) == "fp32" or args.command == "bench":
        # Before any model runs: MLX reads this once (the bench's references are fp32 whatever --dtype says).
        from ltx_ane.runtime.precision import full_fp32_mlx

        full_fp32_mlx()
    try:
        args.run(args)
    except LtxAneError as e:
        print(f"ltx-ane {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltx-ane {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
