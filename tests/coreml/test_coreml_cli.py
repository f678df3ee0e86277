"""`ltx-ane convert` / `ltx-ane inspect` on the command line: results, one-line errors, missing extra,
and the known coremltools incompatibilities (NumPy >= 2.4, aten::concatenate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from coreml_util import small_upscaler, write_json

from ltx_ane.errors import LtxAneError
from tests.cli_util import run_cli


@pytest.fixture(scope="module")
def temporal_package(tmp_path_factory):
    pytest.importorskip("coremltools")
    pytest.importorskip("ltx_core")
    d = tmp_path_factory.mktemp("cli")
    config = write_json(d / "temporal.json", small_upscaler("temporal-x2", blocks=1))
    out = d / "out"
    proc = subprocess.run([sys.executable, "-m", "ltx_ane.cli.main", "convert", "--component", "temporal", "--random-weights",
                           "--config", config, "--tile", "9x64x64", "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(".mlpackage") and "fp16 PSNR" in lines[1] and lines[-1].startswith("converted in")
    return Path(lines[0])


def test_inspect_text_and_json(temporal_package, capsys):
    rc, out, _ = run_cli(capsys, "inspect", str(temporal_package))
    assert rc == 0
    for needle in ("function main:", "latent FLOAT16 [2, 128, 2, 2] -> latent_x2 FLOAT16 [3, 128, 2, 2]", "ops (", "rank 4:",
                   "largest activation:", "last-axis sizes:", "ANE constraints: nothing flagged", "component=temporal"):
        assert needle in out, needle
    rc, out, _ = run_cli(capsys, "inspect", str(temporal_package), "--json")
    report = json.loads(out)
    assert report["functions"][0]["op_counts"]["conv"] > 0
    assert report["metadata"]["ltx_ane.component"] == "temporal"


@pytest.mark.parametrize("argv,message", [
    (["inspect", "/nonexistent.mlpackage"], "package not found"),
    (["convert", "--component", "decoder", "--random-weights", "--tile", "10x64x64", "-o", "{out}"], "needs 8k+1 frames"),
    (["convert", "--component", "encoder", "--random-weights", "--tile", "9x64x40", "-o", "{out}"], "width 40 is not a multiple of 32"),
    (["convert", "--component", "decoder", "--random-weights", "--tile", "nine", "-o", "{out}"], "bad tile shape"),
    (["convert", "--component", "spatial", "--vae", "x.safetensors", "--tile", "9x64x64", "-o", "{out}"], "--vae is for the decoder and encoder"),
    (["convert", "--component", "decoder", "--upscaler", "x.safetensors", "--tile", "9x64x64", "-o", "{out}"], "--upscaler is for"),
    (["convert", "--component", "decoder", "--tile", "9x64x64", "-o", "{out}"], "no weights given"),
    (["convert", "--component", "decoder", "--vae", "x", "--random-weights", "--tile", "9x64x64", "-o", "{out}"], "pass only one of"),
    (["convert", "--component", "decoder", "--vae", "/nonexistent.safetensors", "--tile", "9x64x64", "-o", "{out}"], "checkpoint not found"),
    (["convert", "--component", "temporal", "--random-weights", "--config", "ltx2", "--tile", "9x64x64", "-o", "{out}"], "is a VAE config"),
    (["convert", "--component", "spatial", "--random-weights", "--config", "temporal-x2", "--tile", "9x64x64", "-o", "{out}"], "is a temporal upscaler"),
    (["convert", "--component", "unet", "--random-weights", "--tile", "9x64x64", "-o", "{out}"], "invalid choice: 'unet'"),
])
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(capsys, tmp_path, argv, message):
    pytest.importorskip("coremltools")
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in argv]
    try:
        rc, _, err = run_cli(capsys, *argv)
    except SystemExit as e:  # argparse usage errors exit from inside parse_args
        rc, (_, err) = e.code, capsys.readouterr()
    assert rc == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("command", [["convert", "--component", "temporal", "--random-weights", "--tile", "9x64x64", "-o", "{out}"], ["inspect", "{out}"]])
def test_missing_extra_is_a_one_line_error(tmp_path, command):
    """With coremltools absent, both commands say which extra to install and leave nothing behind."""
    out = tmp_path / "out"
    code = ("import sys; sys.modules['coremltools'] = None; from ltx_ane.cli.main import main; "
            f"sys.exit(main({[c.replace('{out}', str(out)) for c in command]!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install 'ltx-ane[coreml]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_mlx_path_imports_no_conversion_stack():
    """The MLX path (models, loading, every CLI parser) never imports torch, coremltools or ltx-core."""
    code = ("import sys; import ltx_ane.models.loading, ltx_ane.models.video_vae.model, ltx_ane.models.upscaler.model, ltx_ane.coreml.layout; "
            "from ltx_ane.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'coremltools', 'ltx_core') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_numpy_limit(monkeypatch):
    from ltx_ane.coreml import deps

    assert deps.numpy_too_new("2.4.0") and deps.numpy_too_new("2.10.1") and deps.numpy_too_new("3.0.0rc1")
    assert not deps.numpy_too_new("2.3.5") and not deps.numpy_too_new("1.26.4")
    import numpy

    monkeypatch.setattr(numpy, "__version__", "2.4.1")
    with pytest.raises(LtxAneError, match=r"pip install 'numpy<2.4'"):
        deps.require_conversion()


def test_concatenate_converts():
    """ltx-core's CausalConv3d calls torch.concatenate; coremltools 9.0 has no converter for aten::concatenate
    (torch 2.13's tracer records it as aten::cat, other versions and scripted code do not), so it is aliased."""
    pytest.importorskip("coremltools")
    pytest.importorskip("ltx_core")
    import numpy as np
    import torch
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from ltx_core.model.video_vae.convolution import CausalConv3d

    from ltx_ane.coreml.deps import require_conversion

    ct = require_conversion()
    assert _TORCH_OPS_REGISTRY.get_func("concatenate") is ops.cat
    module = CausalConv3d(4, 4).eval()
    x = torch.randn(1, 4, 3, 4, 4)
    model = ct.convert(torch.jit.trace(module, x), inputs=[ct.TensorType(name="x", shape=x.shape, dtype=np.float32)],
                       convert_to="mlprogram", minimum_deployment_target=ct.target.macOS15, skip_model_load=True)
    ops_used = {op.type for f in model.get_spec().mlProgram.functions.values() for op in f.block_specializations[f.opset].operations}
    assert "conv" in ops_used
