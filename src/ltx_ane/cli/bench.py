"""``ltx-ane bench``: every component on every backend of this machine; JSON, Markdown, plots, backend profile."""

from __future__ import annotations

import argparse
import sys

from ltx_ane.models.loading import DTYPES
from ltx_ane.models.registry import NAMES

DEVICE_PROFILES = ("auto", "tiny", "cpu", "gpu", "mac")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time each component on MLX, Core ML (per compute unit) and ltx-core, with parity",
        description="Time the decoder, encoder and upscalers on each backend this machine has (MLX; Core ML per "
        "compute unit on macOS; the ltx-core reference), interleaved, with median/range, first-run time, peak "
        "memory, fps, error against fp32, Core ML placement and a roofline column. Writes STEM.json, STEM.md, "
        "plots, and the backend profile (the fastest backend that passed parity per component and tile).")
    p.add_argument("--components", nargs="+", choices=NAMES, default=list(NAMES))
    p.add_argument("--sizes", nargs="+", metavar="[COMPONENT:]FxHxW",
                   help="latent tiles (encoder: its output grid); default: the device profile's")
    p.add_argument("--backends", nargs="+", metavar="NAME", help="mlx, torch, coreml (= coreml:CPU_AND_NE, "
                   "coreml:CPU_AND_GPU, coreml:ALL) or coreml:UNIT; default: all of these. Rows a machine cannot "
                   "run are kept and marked (e.g. Core ML needs macOS)")
    p.add_argument("--device-profile", choices=DEVICE_PROFILES, default="auto",
                   help="sizes, widths and run counts: cpu (reduced widths, tiny latents), gpu (real widths and "
                   "sizes), mac (real widths, Core ML tile sizes), tiny (tests); auto: mac on macOS, gpu when MLX "
                   "runs on a GPU, else cpu")
    model = p.add_argument_group("model")
    model.add_argument("--vae", metavar="CKPT", help="VAE checkpoint for the decoder and encoder (default: random "
                       "weights at the profile's widths)")
    model.add_argument("--spatial", metavar="CKPT", help="spatial x2 upscaler file (default: random weights)")
    model.add_argument("--temporal", metavar="CKPT", help="temporal x2 upscaler file (default: random weights)")
    model.add_argument("--config", metavar="FILE", help="VAE config JSON or preset (ltx2, ltx23)")
    model.add_argument("--random-weights", action="store_true", help="random weights for every component, "
                       "even where a checkpoint is given")
    model.add_argument("--dtype", choices=DTYPES, default="bf16", help="MLX and torch dtype (default bf16; "
                       "Core ML runs fp16)")
    t = p.add_argument_group("timing")
    t.add_argument("--runs", type=int, help="timed runs per backend (>= 2; default: the profile's)")
    t.add_argument("--warmup", type=int, help="warm-up calls per backend (>= 1; default: the profile's)")
    t.add_argument("--min-psnr", type=float, help="parity gate in dB against fp32 (default 30)")
    t.add_argument("--torch-device", default="auto", help="torch device: auto (cuda if available, else cpu), "
                   "cpu, cuda, mps")
    t.add_argument("--section-budget", type=float, metavar="SECONDS", help="time per section (one component's "
                   "rows, the backends-together run); a section stops after the tile that crosses it and the report "
                   "says what it skipped (default: the device profile's)")
    t.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("output")
    o.add_argument("-o", "--out", metavar="STEM", help="write STEM.json, STEM.md and STEM_*.png "
                   "(default: ltx-ane-bench/bench_<profile>)")
    o.add_argument("--profile", metavar="FILE", help="backend profile to update (default "
                   "~/.cache/ltx-ane/profile.json)")
    o.add_argument("--no-profile", action="store_true", help="do not write the backend profile")
    o.add_argument("--no-plots", action="store_true", help="no PNG plots (they also need matplotlib)")
    o.add_argument("--work-dir", metavar="DIR", help="for temporary checkpoints and Core ML packages")
    o.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ltx_ane.bench import runner as R
    from ltx_ane.bench import settings as S
    from ltx_ane.runtime import profile as P
    from ltx_ane.bench.report import write_outputs
    from ltx_ane.cli.common import check_output_dir
    from ltx_ane.errors import LtxAneError

    name = S.auto_device_profile() if args.device_profile == "auto" else args.device_profile
    dp = S.DEVICE_PROFILES[name]
    backends = S.expand_backends(args.backends) if args.backends else S.Settings().backends
    sizes = S.parse_sizes(args.sizes, args.components) if args.sizes else {}
    if args.runs is not None and args.runs < 2:
        raise LtxAneError("--runs must be at least 2 (a median and a range, never one run)")
    if args.warmup is not None and args.warmup < 1:
        raise LtxAneError("--warmup must be at least 1 (the first call is the first-run time)")
    stem = Path(args.out or f"ltx-ane-bench/bench_{name}")
    stem = stem.with_suffix("") if stem.suffix in (".json", ".md") else stem
    if not stem.parent.exists():
        try:
            stem.parent.mkdir(parents=True)
        except OSError as err:
            raise LtxAneError(f"cannot create {stem.parent}: {err}") from None
    check_output_dir(stem.with_suffix(".json"))
    if args.profile and not args.no_profile:
        check_output_dir(args.profile)
    quiet = args.quiet
    settings = S.Settings(
        components=tuple(args.components), sizes=sizes, backends=backends, device_profile=dp, dtype=args.dtype,
        runs=args.runs if args.runs is not None else dp.runs, warmup=args.warmup if args.warmup is not None else dp.warmup,
        min_psnr=S.BENCH_MIN_PSNR_DB if args.min_psnr is None else args.min_psnr,
        section_budget_s=args.section_budget, torch_device=args.torch_device, vae=args.vae, spatial=args.spatial,
        temporal=args.temporal, config=args.config, random_weights=args.random_weights, seed=args.seed,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        log=(lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True)),
    )
    result = R.run(settings)
    result["command"] = " ".join(["ltx-ane", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "ltx-ane bench"
    files = write_outputs(result, stem, plots=not args.no_plots)
    print(f"wrote {', '.join(str(f) for f in files.values())}")
    if not args.no_profile:
        new = P.profile_from_rows(result["rows"], result["machine"])
        path = P.write_profile(P.merge_profiles(P.load_profile(args.profile, must_exist=False), new), args.profile)
        print(f"backend profile: {path} ({len(new.entries)} entries from this run)")
