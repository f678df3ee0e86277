"""The benchmark's outputs: JSON (everything, raw timings included), a Markdown report and PNG plots.

Plots need matplotlib (the ``bench`` extra); without it the report says that the plots were not made.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ltx_ane.errors import LtxAneError


def _ms(v) -> str:
    return "n/a" if v is None else f"{v * 1e3:.1f}" if v < 10 else f"{v:.1f} s"


def _gb(v) -> str:
    return "n/a" if v is None else f"{v / 1e9:.2f}" if v >= 1e8 else f"{v / 1e6:.1f} MB"


def _tile(t) -> str:
    return "x".join(map(str, t))


def _sci(v) -> str:
    return "n/a" if v is None else f"{v:.2e}"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _db(v) -> str:
    if v is None:
        return "n/a"
    return "inf" if math.isinf(v) and v > 0 else f"{v:.1f}"


def ane_speedups(rows: list[dict]) -> list[dict]:
    """Per (component, tile): the best Core ML ANE row's speed-up over the best GPU-side row (MLX or
    coreml:CPU_AND_GPU; torch where it ran on a GPU), using only rows that passed parity."""
    out = []
    keys = sorted({(r["component"], tuple(r["tile"])) for r in rows})
    for comp, tile in keys:
        ok = [r for r in rows if r["component"] == comp and tuple(r["tile"]) == tile and r.get("status") == "ok"
              and r.get("passed_parity")]
        ane = [r for r in ok if r["backend"] in ("coreml:CPU_AND_NE", "coreml:ALL")]
        gpu = [r for r in ok if r["backend"] == "coreml:CPU_AND_GPU" or (r["backend"] in ("mlx", "torch")
               and r.get("device") not in ("cpu", None))]
        if ane and gpu:
            a = min(ane, key=lambda r: r["median_s"])
            g = min(gpu, key=lambda r: r["median_s"])
            out.append({"component": comp, "tile": list(tile), "ane_backend": a["backend"], "gpu_backend": g["backend"],
                        "speedup": g["median_s"] / a["median_s"]})
    return out


def markdown(result: dict, plots: list[str] | None = None, plot_note: str | None = None) -> str:
    m, v, s = result["machine"], result["versions"], result["settings"]
    rows = result["rows"]
    peaks = m.get("peaks", {})
    lines = [
        f"# ltx-ane bench: {m['chip']}",
        "",
        f"- command: `{result.get('command') or 'n/a'}`",
        f"- machine: {m['chip']} ({m['os']}, {m['cpus']} CPUs, {_gb(m.get('memory_bytes'))} GB memory); "
        f"MLX on {s.get('mlx_device')}, torch on {s['torch_device']}",
        "- float32: " + ", ".join(f"{k} {val}" for k, val in (m.get("fp32") or {}).items()),
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- device profile `{s['device_profile']}`: {s['device_profile_description']}; {s['dtype']} "
        f"(Core ML: fp16); {s['runs']} timed runs after {s['warmup']} warm-up, backends interleaved A/B/A/B",
    ]
    if s.get("reduced_widths"):
        lines.append(f"- **reduced widths** (random weights): {s['reduced_widths']}; the real widths are too slow "
                     "for a CPU, so these times do not predict the real models' times; the ratios between backends "
                     "are only indicative")
    load0, load1 = m.get("load_start", {}), m.get("load_end", {})
    busy = " **The machine was busy when the run started: timings are not clean.**" if m.get("busy") else ""
    lines.append(f"- load average at start {load0.get('load1')} / end {load1.get('load1')} on {load0.get('cpus')} "
                 f"CPUs (the end includes this run's own work).{busy}")
    lines.append(f"- peak rates used for the on-paper columns: ANE {peaks.get('ane_tflops') or 'n/a'}, GPU "
                 f"{peaks.get('gpu_tflops') or 'n/a'} TFLOP/s (table row: {peaks.get('table_chip') or 'none for this chip'})")
    lines.append(f"- wall time {result.get('wall_s', 0):.0f} s")
    lines += [
        "",
        "Time: median [min-max] of whole calls including synchronisation, ms unless marked. First: the first call "
        "(for Core ML, loading and compiling the package). Peak: MLX `get_peak_memory`, torch CUDA "
        "`max_memory_allocated` (weights included); n/a where the backend exposes none (torch on CPU, Core ML). "
        "fps: video frames the call covers per second. Error: max |out - ref| and PSNR (peak max |ref|) against "
        f"the fp32 reference; parity passes at >= {s['min_psnr_db']:g} dB. GFLOP: conv work per call (2 x MAC, "
        "ltx-core's modules on the meta device). %ANE/%GPU peak: time at the chip's peak rate over the measured "
        "time. Tiles are latent [F, h, w] (encoder: its output's grid).",
        "",
        "| component | tile | backend | device | median ms [range] | first | peak GB | fps | max err | PSNR dB | parity "
        "| GFLOP | TFLOP/s | % ANE peak | % GPU peak | ANE ops | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gflop = f"{r['flops'] / 1e9:.2f}" if r.get("flops") else "n/a"
        if r["status"] != "ok":
            lines.append(f"| {r['component']} | {_tile(r['tile'])} | {r['backend']} | | {r['status']} | | | | | | | "
                         f"{gflop} | | | | | {r.get('reason') or ''} |")
            continue
        place = r.get("placement") or {}
        notes = []
        if r.get("noisy"):
            notes.append("noisy (range > 25% of median)")
        if place.get("error"):
            notes.append(f"placement: {place['error']}")
        if r.get("reason"):
            notes.append(r["reason"])
        lines.append(
            f"| {r['component']} | {_tile(r['tile'])} | {r['backend']} | {r['device']} | "
            f"{_ms(r['median_s'])} [{_ms(r['min_s'])}-{_ms(r['max_s'])}] | {_ms(r['first_run_s'])} | "
            f"{_gb(r.get('peak_bytes'))} | {r['fps']:.1f} | "
            f"{_sci(r.get('max_abs_err'))} | {_db(r.get('psnr_db'))} | "
            f"{'pass' if r.get('passed_parity') else 'FAIL'} | {gflop} | "
            f"{_num(r.get('achieved_tflops'))} | "
            f"{_pct(r.get('fraction_of_ane_peak'))} | {_pct(r.get('fraction_of_gpu_peak'))} | "
            f"{_pct(place.get('ane_op_share')) if place and 'error' not in place else 'n/a'} | {'; '.join(notes)} |")
    skipped = sorted({(r["backend"], r["reason"]) for r in rows
                      if r["status"] == "skipped" and not r["reason"].startswith("time budget")})
    if skipped:
        lines += ["", "## Rows this machine could not fill", ""]
        lines += [f"- `{b}`: {reason}" for b, reason in skipped]
    macos = sorted({r["backend"] for r in rows if r["status"] == "skipped" and "macOS" in (r.get("reason") or "")})
    lines += ["", "## ANE versus GPU", ""]
    speed = ane_speedups(rows)
    if speed:
        lines += ["| component | tile | ANE backend | GPU backend | ANE speed-up |", "|---|---|---|---|---|"]
        lines += [f"| {x['component']} | {_tile(x['tile'])} | {x['ane_backend']} | {x['gpu_backend']} | "
                  f"{x['speedup']:.2f}x |" for x in speed]
    else:
        why = (f"the Core ML rows ({', '.join(macos)}) need macOS" if macos else
               "no Core ML ANE row and GPU row both ran and passed parity")
        lines.append(f"No ANE-versus-GPU comparison in this run: {why}. Run `ltx-ane bench` on a Mac to fill it in.")
    hybrid = result.get("hybrid") or []
    lines += ["", "## Backends together (tiled decode, each pulling the next tile)", ""]
    if hybrid:
        lines += ["| tile | tiles | alone, tiles/s | together, tiles/s | together / best alone | tiles done by |",
                  "|---|---|---|---|---|---|"]
        for h in hybrid:
            alone = ", ".join(f"{n} {v:.2f}" for n, v in h["alone_tiles_per_s"].items())
            share = ", ".join(f"{n} {v}" for n, v in h["together_tiles_by_backend"].items())
            lines.append(f"| {_tile(h['tile'])} | {h['tiles']} | {alone} | {h['together_tiles_per_s']:.2f} | "
                         f"{_num(h.get('together_over_best_alone'))}x | {share} |")
    else:
        lines.append("Not measured: fewer than two decoder backends ran, or the decoder tile is too small to split.")
    lines += ["", f"## Time budget ({s.get('section_budget_s', 'n/a')} s per section)", ""]
    lines += [f"- skipped {line}" for line in result.get("skipped_for_time") or []] or ["Every section finished within it."]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failures", ""] + [f"- {r['component']} {_tile(r['tile'])} {r['backend']}: {r['reason']}"
                                            for r in failed]
    lines += ["", "## Plots", ""]
    if plots:
        lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if plot_note:
        lines.append(plot_note)
    return "\n".join(lines) + "\n"


def plot(result: dict, stem: Path) -> tuple[list[Path], str | None]:
    """Latency per backend and tile; ANE speed-up per component. Returns the files and a note for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "Plots not made: matplotlib is not installed (`pip install 'ltx-ane[bench]'`)."
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    comps = [c for c in result["settings"]["components"] if any(r["component"] == c for r in rows)]
    files = []
    if comps:
        fig, axes = plt.subplots(1, len(comps), figsize=(4.5 * len(comps), 4), squeeze=False)
        for ax, comp in zip(axes[0], comps):
            sub = [r for r in rows if r["component"] == comp]
            tiles = sorted({tuple(r["tile"]) for r in sub}, key=lambda t: math.prod(t))
            backends = sorted({r["backend"] for r in sub})
            width = 0.8 / max(1, len(backends))
            for i, b in enumerate(backends):
                xs, ys, lo, hi = [], [], [], []
                for j, t in enumerate(tiles):
                    r = next((r for r in sub if r["backend"] == b and tuple(r["tile"]) == t), None)
                    if r:
                        xs.append(j + i * width)
                        ys.append(r["median_s"] * 1e3)
                        lo.append((r["median_s"] - r["min_s"]) * 1e3)
                        hi.append((r["max_s"] - r["median_s"]) * 1e3)
                ax.bar(xs, ys, width, yerr=[lo, hi], label=b, capsize=2)
            ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(tiles))])
            ax.set_xticklabels([_tile(t) for t in tiles])
            ax.set_yscale("log")
            ax.set_title(comp)
            ax.set_xlabel("latent tile F x h x w")
            ax.set_ylabel("median ms (bars: range)")
            ax.legend(fontsize=7)
        fig.suptitle(f"ltx-ane bench: latency per backend ({result['machine']['chip']})")
        fig.tight_layout()
        path = stem.with_name(stem.name + "_latency.png")
        _save(fig, path)
        plt.close(fig)
        files.append(path)
    speed = ane_speedups(result["rows"])
    fig, ax = plt.subplots(figsize=(6, 4))
    if speed:
        labels = [f"{x['component']}\n{_tile(x['tile'])}" for x in speed]
        ax.bar(range(len(speed)), [x["speedup"] for x in speed])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(speed)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("GPU time / ANE time")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "No ANE rows in this run:\nCore ML needs macOS (run ltx-ane bench on a Mac)",
                ha="center", va="center", fontsize=11)
    ax.set_title("ANE speed-up over the GPU, per component")
    fig.tight_layout()
    path = stem.with_name(stem.name + "_ane_speedup.png")
    _save(fig, path)
    plt.close(fig)
    files.append(path)
    return files, None


def _save(fig, path: Path) -> None:
    from ltx_ane.io.latents import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def write_outputs(result: dict, stem: str | Path, plots: bool = True) -> dict[str, Path]:
    """``STEM.json``, ``STEM.md`` and ``STEM_*.png``; returns what was written."""
    stem = Path(stem)
    stem = stem.with_suffix("") if stem.suffix in (".json", ".md") else stem
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LtxAneError(f"cannot create {stem.parent}: {err}") from None
    files, note = plot(result, stem) if plots else ([], "Plots not made (--no-plots).")
    from ltx_ane.io.latents import atomic_output

    out = {"json": stem.with_suffix(".json"), "markdown": stem.with_suffix(".md")}
    # Both texts are made before either file is written, and each file appears whole (temporary name, rename).
    texts = {"json": json.dumps(result, indent=1, default=str) + "\n",
             "markdown": markdown(result, [str(f) for f in files], note)}
    try:
        for key, text in texts.items():
            with atomic_output(out[key]) as tmp:
                tmp.write_text(text)
    except OSError as err:
        raise LtxAneError(f"cannot write the report: {err}") from None
    for i, f in enumerate(files):
        out[f"plot{i}"] = f
    return out
