"""``ltx-ane bench``: outputs (JSON, Markdown, profile), backend selection, macOS rows, bad flags. No timed
assertions: one tiny run (minimal widths, 1 warm-up + 2 runs) is checked for shape and honesty, not speed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltx_ane.bench import settings as S
from ltx_ane.runtime import profile as P
from ltx_ane.cli.main import main
from ltx_ane.errors import LtxAneError


# What the hand-made rows below were measured with.
MEASURED_WITH = {"config_hash": "c0", "weights_digest": "w0", "dtype": "bf16"}


def best_backend(profile, component, tile, identity=MEASURED_WITH):
    """The backend ``--backend auto`` picks from a profile for this component, tile and run, or None."""
    entry = profile.choose(component, tuple(tile), identity)
    return entry.backend if entry else None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("ltx_core")
    tmp = tmp_path_factory.mktemp("bench")
    before = os.environ.get("MLX_ENABLE_TF32")
    try:
        code = main(["bench", "--device-profile", "tiny", "--components", "decoder", "temporal", "--quiet",
                     "--out", str(tmp / "r"), "--profile", str(tmp / "profile.json")])
    finally:  # the bench asks MLX for full fp32 process-wide; later tests get the environment they started with
        os.environ.pop("MLX_ENABLE_TF32", None)
        if before is not None:
            os.environ["MLX_ENABLE_TF32"] = before
    assert code == 0
    return tmp, json.loads((tmp / "r.json").read_text())


def test_json_has_machine_versions_and_raw_timings(tiny_run):
    _, result = tiny_run
    assert {"chip", "os", "memory_bytes", "load_start", "load_end", "busy"} <= set(result["machine"])
    assert result["versions"]["mlx"] and result["versions"]["ltx-core"]
    assert result["settings"]["runs"] == 2 and result["settings"]["warmup"] == 1
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    assert {(r["component"], r["backend"]) for r in ok} == {(c, b) for c in ("decoder", "temporal") for b in ("mlx", "torch")}
    for r in ok:
        assert len(r["runs_s"]) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["first_run_s"] > 0 and r["fps"] > 0 and r["flops"] > 0
        assert r["passed_parity"] and r["psnr_db"] > 30 and r["reference"] == "ltx-core fp32"
    mlx = [r for r in ok if r["backend"] == "mlx"]
    assert all(r["peak_bytes"] > 0 for r in mlx)


@pytest.mark.skipif(sys.platform == "darwin", reason="checks how a non-Mac marks the Core ML rows")
def test_core_ml_rows_are_marked_as_needing_macos(tiny_run):
    tmp, result = tiny_run
    coreml = [r for r in result["rows"] if r["backend"].startswith("coreml:")]
    assert coreml and all(r["status"] == "skipped" and "macOS" in r["reason"] for r in coreml)
    md = (tmp / "r.md").read_text()
    assert "needs macOS" in md and "No ANE-versus-GPU comparison" in md
    assert "reduced widths" in md and "| decoder | 2x3x3 | mlx |" in md


def test_profile_is_written_and_read(tiny_run):
    tmp, result = tiny_run
    prof = P.load_profile(tmp / "profile.json")
    assert {(e.component, e.tile) for e in prof.entries} == {("decoder", (2, 3, 3)), ("temporal", (2, 2, 2))}
    fastest = min((r for r in result["rows"] if r["component"] == "decoder" and r["status"] == "ok"),
                  key=lambda r: r["median_s"])
    measured_with = fastest["measured_with"]
    assert measured_with["dtype"] == "bf16" and {e.measured_with["config_hash"] for e in prof.entries} == {
        r["measured_with"]["config_hash"] for r in result["rows"] if r["status"] == "ok"}
    assert best_backend(prof, "decoder", [2, 3, 3], measured_with) == fastest["backend"]
    assert best_backend(prof, "decoder", [2, 3, 3], {**measured_with, "weights_digest": "other"}) is None
    assert best_backend(prof, "decoder", [3, 2, 2], measured_with) is None
    assert best_backend(prof, "encoder", (2, 2, 2), measured_with) is None


def test_plots_or_a_note_when_matplotlib_is_missing(tiny_run, tmp_path, monkeypatch):
    from ltx_ane.bench.report import write_outputs

    tmp, result = tiny_run
    if importlib.util.find_spec("matplotlib"):
        assert (tmp / "r_latency.png").stat().st_size > 0 and (tmp / "r_ane_speedup.png").exists()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    files = write_outputs(result, tmp_path / "x")
    assert set(files) == {"json", "markdown"}
    assert "matplotlib is not installed" in files["markdown"].read_text()


def test_profile_rows_pick_the_fastest_passing_backend(tmp_path):
    rows = [
        {"component": "decoder", "tile": [2, 2, 2], "backend": "coreml:CPU_AND_NE", "status": "ok", "median_s": 0.1, "passed_parity": False},
        {"component": "decoder", "tile": [2, 2, 2], "backend": "mlx", "status": "ok", "median_s": 0.3, "passed_parity": True},
        {"component": "decoder", "tile": [2, 2, 2], "backend": "torch", "status": "ok", "median_s": 0.2, "passed_parity": True},
        {"component": "decoder", "tile": [2, 2, 2], "backend": "coreml:ALL", "status": "skipped", "median_s": None},
        {"component": "spatial", "tile": [1, 2, 2], "backend": "mlx", "status": "ok", "median_s": 0.1, "passed_parity": False},
    ]
    rows = [{**r, "measured_with": MEASURED_WITH} for r in rows]
    prof = P.profile_from_rows(rows, {"chip": "X"})
    assert best_backend(prof, "decoder", (2, 2, 2)) == "torch"
    assert best_backend(prof, "spatial", (1, 2, 2)) is None  # measured, rejected: kept with passed_parity false
    assert [e.passed_parity for e in prof.entries if e.component == "spatial"] == [False]
    path = P.write_profile(prof, tmp_path / "p.json")
    assert P.load_profile(path).entries == prof.entries
    newer = P.profile_from_rows([{**rows[1], "tile": [3, 2, 2]}], {"chip": "X"})
    merged = P.merge_profiles(P.load_profile(path), newer)
    assert best_backend(merged, "decoder", (2, 2, 2)) == "torch" and best_backend(merged, "decoder", (3, 2, 2)) == "mlx"
    assert P.merge_profiles(prof, P.profile_from_rows([], {"chip": "Y"})).entries == []
    assert P.load_profile(tmp_path / "absent.json", must_exist=False) is None
    (tmp_path / "bad.json").write_text('{"entries": [{"component": "vae"}]}')
    with pytest.raises(LtxAneError, match="entry 0: component 'vae' is not one of"):
        P.load_profile(tmp_path / "bad.json")


def test_backend_selection():
    assert S.expand_backends(["coreml", "mlx", "coreml:CPU_AND_NE"]) == (
        "coreml:CPU_AND_NE", "coreml:CPU_AND_GPU", "coreml:ALL", "mlx")
    assert S.unavailable_reason("coreml:CPU_AND_NE", platform="linux").startswith("needs macOS")
    assert S.unavailable_reason("mlx") is None
    with pytest.raises(LtxAneError, match="unknown backend"):
        S.expand_backends(["metal"])
    assert S.parse_sizes(["2x3x4", "decoder:1x2x2"], ["decoder", "spatial"]) == {
        "decoder": [(2, 3, 4), (1, 2, 2)], "spatial": [(2, 3, 4)]}
    assert S.auto_device_profile() in S.DEVICE_PROFILES


def test_flops_match_the_reference_table():
    pytest.importorskip("ltx_core")
    from ltx_ane.bench.flops import conv_flops, time_at_peak
    from ltx_ane.models.config import load_preset

    assert conv_flops("decoder", load_preset("ltx2"), (16, 16, 24)) / 1e12 == pytest.approx(60.2, abs=0.05)
    assert conv_flops("temporal", load_preset("temporal-x2"), (16, 16, 24)) / 1e12 == pytest.approx(2.3, abs=0.05)
    assert time_at_peak(int(18e12), 18.0) == pytest.approx(1.0) and time_at_peak(None, 18.0) is None


@pytest.mark.parametrize("argv, message", [
    (["--backends", "metal"], "unknown backend 'metal'"),
    (["--runs", "1"], "--runs must be at least 2"),
    (["--warmup", "0"], "--warmup must be at least 1"),
    (["--sizes", "2x2"], "is not [component:]FxHxW"),
    (["--sizes", "vae:2x2x2"], "unknown component 'vae'"),
    (["--components", "vae"], "invalid choice"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["bench", "--out", str(tmp_path / "file" / "sub" / "r")]) == 2
    err = capsys.readouterr().err
    assert "cannot create" in err and err.count("\n") == 1


def test_backends_together_are_measured(tiny_run):
    """With MLX and ltx-core both present, the decoder's tiles are also run on both at once (issue 6)."""
    tmp, result = tiny_run
    (h,) = result["hybrid"]
    assert set(h["backends"]) == {"mlx", "torch"} and h["tiles"] > 2
    assert set(h["alone_tiles_per_s"]) == {"mlx", "torch"} and h["together_tiles_per_s"] > 0
    assert sum(h["together_tiles_by_backend"].values()) == h["tiles"]
    assert "Backends together" in (tmp / "r.md").read_text()


def test_the_machine_record_says_float32_runs_at_full_precision(tiny_run):
    tmp, result = tiny_run
    assert result["machine"]["fp32"]["MLX_ENABLE_TF32"] == "0" and result["machine"]["fp32"]["mlx_fp32_full_precision"]
    assert result["machine"]["fp32"]["torch_fp32_full_precision"]
    assert "mlx_fp32_full_precision True" in (tmp / "r.md").read_text()


# What a command's process sees when its subcommand runs (the subcommand replaced by a probe, before any model).
PROBE = """
import os, sys
import ltx_ane.cli.{module} as command
command.run = lambda args: print("MLX_ENABLE_TF32=" + str(os.environ.get("MLX_ENABLE_TF32")))
from ltx_ane.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv, expected", [
    (["decode", "--random-latent", "1x1x1", "--random-weights", "--dtype", "fp32", "-o", "x.mp4"], "0"),
    (["decode", "--random-latent", "1x1x1", "--random-weights", "-o", "x.mp4"], "None"),
    (["bench", "--device-profile", "tiny"], "0"),
])
def test_fp32_asks_mlx_for_full_precision_before_the_command_runs(argv, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLX_ENABLE_TF32"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=argv[0]), *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"MLX_ENABLE_TF32={expected}"


def test_report_and_profile_writes_leave_nothing_behind_on_failure(tiny_run, tmp_path, monkeypatch):
    from ltx_ane.bench import report

    _, result = tiny_run
    monkeypatch.setattr(report, "markdown", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        report.write_outputs(result, tmp_path / "r", plots=False)
    assert list(tmp_path.iterdir()) == []  # not the JSON without its Markdown, no temporary file

    def disk_full(self, text):
        with open(self, "w") as f:
            f.write(text[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    profile = P.profile_from_rows([], {})
    with pytest.raises(LtxAneError, match="No space left"):
        P.write_profile(profile, tmp_path / "profile.json")
    assert list(tmp_path.iterdir()) == []


def test_sections_keep_their_time_budget_and_say_what_they_skipped(tmp_path):
    pytest.importorskip("ltx_core")
    code = main(["bench", "--device-profile", "tiny", "--components", "decoder", "--sizes", "decoder:2x3x3",
                 "decoder:2x3x4", "decoder:3x3x3", "--backends", "mlx", "torch", "--section-budget", "0", "--quiet",
                 "--no-profile", "--no-plots", "--out", str(tmp_path / "r")])
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    ran = {tuple(r["tile"]) for r in result["rows"] if r["status"] == "ok"}
    assert ran == {(2, 3, 3)}  # the first tile always runs; the budget stops the section after it
    late = [r for r in result["rows"] if r["status"] == "skipped"]
    assert {tuple(r["tile"]) for r in late} == {(2, 3, 4), (3, 3, 3)} and all("time budget" in r["reason"] for r in late)
    (hybrid,) = result["hybrid"]
    assert hybrid["passes"] == 1
    assert [line.split(":")[0] for line in result["skipped_for_time"]] == ["decoder tiles 2x3x4, 3x3x3", "backends together"]
    text = (tmp_path / "r.md").read_text()
    assert "## Time budget (0.0 s per section)" in text and "- skipped backends together: 1 of 2 timed passes" in text
