"""``ltx-ane inspect``: what a Core ML package holds and what the public ANE constraints flag (any OS)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="ops, ranks, dtypes, tensor sizes, functions and ANE flags of a .mlpackage",
        description="Read a Core ML package's program (not its weights) and report ops by type, tensor ranks and "
        "dtypes, the largest tensors, last-axis sizes, functions and their shapes, and what the public Neural "
        "Engine constraints say will not run (or run slowly) on the ANE. Works on any OS.",
    )
    p.add_argument("package", metavar="PACKAGE", help="a .mlpackage folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ltx_ane.coreml.graph import format_report, inspect_package

    report = inspect_package(args.package)
    print(report.to_json() if args.json else format_report(report))
