"""The macOS runtime: Core ML output against the MLX components (PSNR >= 40 dB in fp16), compile cache,
compute units and per-op placement. On Linux only the refusal is tested; the rest skips with the reason."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from coreml_util import MACOS_ONLY, small_upscaler, small_vae

from ltx_ane.errors import LtxAneError


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal on non-macOS systems")
def test_running_core_ml_off_macos_is_a_one_line_error(tmp_path):
    from ltx_ane.coreml.runtime import CoreMLComponent, compile_cached

    for call in (lambda: CoreMLComponent(tmp_path / "x.mlpackage"), lambda: compile_cached(tmp_path / "x.mlpackage")):
        with pytest.raises(LtxAneError, match="Core ML models run only on macOS") as err:
            call()
        assert "\n" not in str(err.value)


def _psnr(test: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((test.astype(np.float64) - ref.astype(np.float64)) ** 2))
    peak = float(ref.max() - ref.min())
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture(scope="module")
def vae_checkpoint(tmp_path_factory):
    pytest.importorskip("ltx_core")
    from ltx_ane.reference import write_checkpoint
    from ltx_ane.reference.video_vae import build_decoder, build_encoder, vae_state_dict

    config = small_vae("ltx2", depth=1)
    path = tmp_path_factory.mktemp("ckpt") / "vae.safetensors"
    return write_checkpoint(path, vae_state_dict(decoder=build_decoder(config), encoder=build_encoder(config)), config)


@MACOS_ONLY
@pytest.mark.parametrize("compute_units", ["CPU_AND_NE", "CPU_ONLY"])
def test_decoder_matches_mlx(vae_checkpoint, tmp_path, compute_units):
    import mlx.core as mx

    from ltx_ane.coreml.convert import ConvertOptions, TileShape, convert
    from ltx_ane.coreml.layout import frames_to_video
    from ltx_ane.coreml.runtime import CoreMLComponent
    from ltx_ane.models.loading import Source
    from ltx_ane.models.video_vae.loader import load_decoder

    source = Source(checkpoint=str(vae_checkpoint))
    package = convert("decoder", source, [TileShape.parse("9x64x64")], tmp_path, options=ConvertOptions(log=lambda m: None)).path
    latent = np.random.default_rng(0).standard_normal((1, 16, 2, 2, 2)).astype(np.float32)
    expected = np.array(load_decoder(source, dtype="fp32")(mx.array(latent)))[0]
    core = CoreMLComponent(package, compute_units)
    frames = np.array(core(mx.array(latent[0].transpose(1, 0, 2, 3))).astype(mx.float32))
    assert _psnr(frames_to_video(frames), expected) >= 40


@MACOS_ONLY
def test_encoder_matches_mlx(vae_checkpoint, tmp_path):
    import mlx.core as mx

    from ltx_ane.coreml.convert import ConvertOptions, TileShape, convert
    from ltx_ane.coreml.layout import video_to_frames
    from ltx_ane.coreml.runtime import CoreMLComponent
    from ltx_ane.models.loading import Source
    from ltx_ane.models.video_vae.loader import load_encoder

    source = Source(checkpoint=str(vae_checkpoint))
    package = convert("encoder", source, [TileShape.parse("9x64x64")], tmp_path, options=ConvertOptions(log=lambda m: None)).path
    video = np.random.default_rng(1).uniform(-1, 1, (1, 3, 9, 64, 64)).astype(np.float32)
    expected = np.array(load_encoder(source, dtype="fp32")(mx.array(video)))[0]
    latent = np.array(CoreMLComponent(package)(mx.array(video_to_frames(video[0]))).astype(mx.float32))
    assert _psnr(latent.transpose(1, 0, 2, 3), expected) >= 40


@MACOS_ONLY
@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_upscaler_matches_mlx(tmp_path, kind):
    import mlx.core as mx

    from ltx_ane.coreml.convert import CONVERTERS, ConvertOptions, TileShape
    from ltx_ane.coreml.runtime import CoreMLComponent
    from ltx_ane.models.loading import Source
    from ltx_ane.models.upscaler.loader import load_upscaler
    from ltx_ane.reference import write_checkpoint
    from ltx_ane.reference.upscaler import build_upscaler, upscaler_state_dict

    config = small_upscaler(f"{kind}-x2", blocks=1)
    path = write_checkpoint(tmp_path / "up.safetensors", upscaler_state_dict(build_upscaler(config)), config)
    source = Source(checkpoint=str(path))
    package = CONVERTERS[kind](source, [TileShape.parse("17x64x64")], tmp_path, options=ConvertOptions(log=lambda m: None)).path
    latent = np.random.default_rng(2).standard_normal((1, 128, 3, 2, 2)).astype(np.float32)
    expected = np.array(load_upscaler(source, dtype="fp32", expected_kind=kind)(mx.array(latent)))[0]
    out = np.array(CoreMLComponent(package)(mx.array(latent[0].transpose(1, 0, 2, 3))).astype(mx.float32))
    assert _psnr(out.transpose(1, 0, 2, 3), expected) >= 40


@MACOS_ONLY
def test_compile_is_cached_and_placement_is_reported(vae_checkpoint, tmp_path, monkeypatch):
    from ltx_ane.coreml.convert import ConvertOptions, TileShape, convert
    from ltx_ane.coreml.runtime import CoreMLComponent, compile_cached

    monkeypatch.setenv("LTX_ANE_CACHE", str(tmp_path / "cache"))
    from ltx_ane.models.loading import Source

    package = convert("decoder", Source(checkpoint=str(vae_checkpoint)), [TileShape.parse("9x64x64"), TileShape.parse("17x64x64")],
                              tmp_path, options=ConvertOptions(log=lambda m: None)).path
    first = compile_cached(package)
    stamp = first.stat().st_mtime_ns
    assert compile_cached(package) == first and first.stat().st_mtime_ns == stamp
    core = CoreMLComponent(package, "CPU_AND_NE")
    placement = core.placement("tile_17x64x64")
    assert sum(sum(ops.values()) for ops in placement.ops_by_device.values()) > 0
    print(json.dumps(placement.ops_by_device), placement.summary())
    with pytest.raises(LtxAneError, match="no function for input shape"):
        core.function_for((5, 16, 2, 2))


# ------------------------------------------------------------------------- the runtime's logic, on any OS


class _Device:
    pass


def _device(name):
    return type(name, (_Device,), {})()


class FakeComputePlan:
    """Stands in for coremltools' MLComputePlan: two ops on the ANE, one on the CPU, and a const (not counted)."""

    def __init__(self):
        ops = [("conv", "MLNeuralEngineComputeDevice", 0.6), ("silu", "MLNeuralEngineComputeDevice", 0.1),
               ("const", "MLCPUComputeDevice", 0.0), ("reshape", "MLCPUComputeDevice", 0.3)]
        self.ops = [type("Op", (), {"operator_name": name, "device": dev, "cost": cost})() for name, dev, cost in ops]
        function = type("F", (), {"block": type("B", (), {"operations": self.ops})()})()
        program = type("P", (), {"functions": {"tile_9x64x64": function}})()
        self.model_structure = type("S", (), {"program": program})()

    @classmethod
    def load_from_path(cls, path, compute_units):
        return cls()

    def get_compute_device_usage_for_mlprogram_operation(self, op):
        return type("U", (), {"preferred_compute_device": _device(op.device)})()

    def get_estimated_cost_for_mlprogram_operation(self, op):
        return type("C", (), {"weight": op.cost})()


def _component(monkeypatch, metadata):
    import types

    from ltx_ane.coreml import package, runtime

    monkeypatch.setattr(runtime, "require_macos", lambda: None)
    monkeypatch.setattr(package, "read_metadata", lambda path: metadata)
    fake_ct = types.SimpleNamespace(ComputeUnit=types.SimpleNamespace(CPU_AND_NE="CPU_AND_NE"))
    monkeypatch.setattr(runtime.CoreMLComponent, "_ct", lambda self: fake_ct)
    monkeypatch.setitem(sys.modules, "coremltools.models.compute_plan", types.SimpleNamespace(MLComputePlan=FakeComputePlan))
    return runtime.CoreMLComponent


CONVERTED = {"ltx_ane.component": "decoder", "ltx_ane.input_name": "latent", "ltx_ane.output_name": "frames",
             "ltx_ane.functions": json.dumps({"9x64x64": {"function": "tile_9x64x64", "input": [2, 128, 2, 2]},
                                              "17x64x64": {"function": "tile_17x64x64", "input": [3, 128, 2, 2]}})}


def test_shape_choice_and_placement_summary_through_fakes(monkeypatch, tmp_path):
    component = _component(monkeypatch, CONVERTED)(tmp_path / "d.mlpackage")
    assert component.function_for((3, 128, 2, 2)) == "tile_17x64x64"
    with pytest.raises(LtxAneError, match=r"no function for input shape \(4, 128, 2, 2\) .*\(2, 128, 2, 2\), \(3, 128, 2, 2\)"):
        component.function_for((4, 128, 2, 2))
    component._compiled = tmp_path / "d.mlmodelc"
    placement = component.placement()
    assert placement.function == "tile_9x64x64"
    assert placement.ops_by_device == {"ANE": {"conv": 1, "silu": 1}, "CPU": {"reshape": 1}}
    assert placement.summary() == "tile_9x64x64 on CPU_AND_NE: ANE: 2 ops, 70% of cost; CPU: 1 ops, 30% of cost"


def test_a_foreign_package_is_one_line(monkeypatch, tmp_path):
    foreign = {"com.github.apple.coremltools.version": "8.0"}  # a package some other tool made
    with pytest.raises(LtxAneError, match="was not made by `ltx-ane convert` .no component, input_name") as err:
        _component(monkeypatch, foreign)(tmp_path / "other.mlpackage")
    assert "\n" not in str(err.value)
