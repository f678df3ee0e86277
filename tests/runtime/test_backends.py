"""Backend names, the profile, the choice rules and their fallbacks, and each backend against MLX."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
import torch

from ltx_ane.runtime import backends as B
from ltx_ane.runtime import choice as C
from ltx_ane.runtime import profile as P
from ltx_ane.runtime.coreml_backend import CoreMLBackend
from ltx_ane.models.config import load_preset
from ltx_ane.errors import LtxAneError
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder
from ltx_ane.models.upscaler.upsample import random_statistics
from tests.vae_util import small_config, write_vae


def write_profile(path, entries):
    path.write_text(json.dumps({"entries": entries}))
    return P.load_profile(path)


# What the run being chosen for holds; entries are measured with it unless a test says otherwise.
RUN = {"config_hash": "c0", "weights_digest": "w0", "dtype": "bf16"}


def this_run() -> dict:
    return dict(RUN)


def entry(backend, passed=True, seconds=1.0, component="decoder", tile=(2, 2, 2), measured_with=RUN, **extra):
    out = {"component": component, "tile": list(tile) if tile else None, "backend": backend,
           "passed_parity": passed, "median_s": seconds, **extra}
    if measured_with is not None:
        out["measured_with"] = dict(measured_with)
    return out


# ------------------------------------------------------------------------------------------- names, profile


def test_parse_spec():
    assert C.parse_spec("auto") == ["auto"]
    assert C.parse_spec("MLX") == ["mlx"]
    assert C.parse_spec("coreml") == ["coreml:CPU_AND_NE"]
    assert C.parse_spec("mlx,coreml:all") == ["mlx", "coreml:ALL"]
    for bad, match in (("cuda", "unknown backend"), ("coreml:GPU", "compute unit"), ("mlx,auto", "cannot be combined"),
                       ("mlx,mlx", "twice"), ("torch:ALL", "only coreml"), ("mlx,", "empty")):
        with pytest.raises(LtxAneError, match=match):
            C.parse_spec(bad)


def test_profile_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("LTX_ANE_CACHE", str(tmp_path / "cache"))
    assert P.load_profile() is None  # no default profile: not an error
    with pytest.raises(LtxAneError, match="does not exist"):
        P.load_profile(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    for text, match in (("{", "cannot read"), ('{"x": 1}', "entries"), ('{"entries": [{"component": "vae"}]}', "component"),
                        ('{"entries": [{"component": "decoder", "tile": [1], "backend": "mlx"}]}', "tile")):
        bad.write_text(text)
        with pytest.raises(LtxAneError, match=match):
            P.load_profile(bad)


def test_reads_what_the_bench_writes(tmp_path):
    rows = [{**entry("coreml:CPU_AND_NE", seconds=0.5), "status": "ok"}, {**entry("mlx", seconds=0.9), "status": "ok"}]
    assert P.profile_from_rows(rows, {}).entries[0].measured_with == RUN
    path = P.write_profile(P.profile_from_rows(rows, {}), tmp_path / "p.json")
    profile = P.load_profile(path)
    assert profile.choose("decoder", (2, 2, 2), RUN).backend == "coreml:CPU_AND_NE"
    assert profile.choose("decoder", (3, 2, 2), RUN) is None


# ------------------------------------------------------------------------------------------- choice


def test_auto_without_profile_or_macos_is_mlx(tmp_path):
    c = C.choose("decoder", "auto", (2, 2, 2), None, platform="darwin", profile_path=tmp_path / "none.json")
    assert c.names == ["mlx"] and "no profile" in c.reason
    profile = write_profile(tmp_path / "p.json", [entry("coreml:CPU_AND_NE", package="d.mlpackage")])
    c = C.choose("decoder", "auto", (2, 2, 2), profile, platform="linux", identity=this_run)
    assert c.names == ["mlx"] and "not macOS" in c.reason
    c = C.choose("decoder", "auto", (2, 2, 2), profile, platform="darwin", identity=this_run)
    assert c.names == ["coreml:CPU_AND_NE"] and c.package == "d.mlpackage"
    assert "coreml:CPU_AND_NE" in c.describe()


def test_auto_never_picks_a_failed_parity_gate(tmp_path):
    profile = write_profile(tmp_path / "p.json", [entry("coreml:CPU_AND_NE", passed=False, seconds=0.1, package="d"),
                                                  entry("torch", seconds=5.0), entry("mlx", seconds=2.0)])
    assert C.choose("decoder", "auto", (2, 2, 2), profile, platform="darwin", identity=this_run).names == ["mlx"]
    only_failed = write_profile(tmp_path / "q.json", [entry("coreml:ALL", passed=False, package="d")])
    c = C.choose("decoder", "auto", (2, 2, 2), only_failed, platform="darwin", identity=this_run)
    assert c.names == ["mlx"] and "failed parity: coreml:ALL" in c.reason
    with pytest.raises(LtxAneError, match="failed its parity gate"):
        C.choose("decoder", "coreml:ALL", (2, 2, 2), only_failed, package="d", platform="darwin")


def test_auto_without_package_and_concurrent_entries(tmp_path):
    profile = write_profile(tmp_path / "p.json", [entry("mlx,coreml:CPU_AND_NE", seconds=0.5)])
    c = C.choose("decoder", "auto", (2, 2, 2), profile, platform="darwin", identity=this_run)
    assert c.names == ["mlx"] and "no package" in c.reason
    c = C.choose("decoder", "auto", (2, 2, 2), profile, package="d", platform="darwin", identity=this_run)
    assert c.names == ["mlx", "coreml:CPU_AND_NE"]
    tileless = write_profile(tmp_path / "t.json", [entry("torch", component="spatial", tile=None)])
    assert C.choose("spatial", "auto", (3, 4, 4), tileless, identity=this_run).names == ["torch"]


def test_auto_uses_only_entries_measured_with_this_run(tmp_path):
    other_weights, other_dtype = {**RUN, "weights_digest": "w1"}, {**RUN, "dtype": "fp32"}
    mixed = write_profile(tmp_path / "p.json", [
        entry("coreml:CPU_AND_NE", seconds=0.1, package="d", measured_with=other_weights),
        entry("mlx", seconds=0.2, measured_with=other_dtype), entry("torch", seconds=0.9)])
    c = C.choose("decoder", "auto", (2, 2, 2), mixed, platform="darwin", identity=this_run)
    assert c.names == ["torch"] and c.reason.startswith("auto: fastest passing in profile")
    assert "ignored coreml:CPU_AND_NE: measured with other weights; mlx: measured with dtype fp32, not bf16" in c.reason
    c = C.choose("decoder", "auto", (2, 2, 2), mixed, platform="darwin", identity=lambda: other_weights)
    assert c.names == ["coreml:CPU_AND_NE"] and c.package == "d"
    c = C.choose("decoder", "auto", (2, 2, 2), mixed, platform="darwin", identity=lambda: {**RUN, "config_hash": "c1"})
    assert c.names == ["mlx"] and "no entry for this run" in c.reason and "another config, other weights" in c.reason
    c = C.choose("decoder", "auto", (2, 2, 2), mixed, platform="darwin")
    assert c.names == ["mlx"] and "the run's config, weights and dtype are not known" in c.reason


def test_auto_ignores_entries_from_before_identities_were_recorded(tmp_path):
    old = write_profile(tmp_path / "p.json", [entry("torch", seconds=0.1, measured_with=None)])
    c = C.choose("decoder", "auto", (2, 2, 2), old, identity=this_run)
    assert c.names == ["mlx"]
    assert c.reason == ("auto: profile has no passing backend for 2x2x2 (no entry for this run; ignored torch: no record "
                        "of the weights, config and dtype it was measured with; `ltx-ane bench` with this model "
                        "measures it)")
    merged = P.merge_profiles(old, P.Profile(None, [], {}, None))
    assert merged.entries == []  # never usable, so a new bench run drops it
    with pytest.raises(LtxAneError, match="'measured_with' must map config_hash, weights_digest, dtype to strings"):
        write_profile(tmp_path / "bad.json", [entry("torch", measured_with={"dtype": "bf16"})])


def test_the_run_identity_is_computed_only_when_the_profile_has_entries_for_it(tmp_path):
    def unreachable():
        raise AssertionError("computed the weights digest for nothing")

    profile = write_profile(tmp_path / "p.json", [entry("torch")])
    assert C.choose("encoder", "auto", (2, 2, 2), profile, identity=unreachable).names == ["mlx"]
    assert C.choose("decoder", "auto", (3, 2, 2), profile, identity=unreachable).names == ["mlx"]


def test_run_identity_is_the_package_identity_plus_the_dtype(vae):
    bf16 = load_decoder(Source(checkpoint=str(vae)), "bf16")
    fp32 = load_decoder(Source(checkpoint=str(vae)), "fp32")
    assert B.run_identity(bf16) == {**B.model_identity(bf16), "dtype": "bf16"}
    assert B.run_identity(fp32) == {**B.model_identity(bf16), "dtype": "fp32"}


def test_explicit_choices_that_cannot_work_are_errors():
    with pytest.raises(LtxAneError, match="only on macOS"):
        C.choose("decoder", "coreml", None, None, package="d", platform="linux")
    with pytest.raises(LtxAneError, match="--package"):
        C.choose("decoder", "coreml", None, None, platform="darwin")
    with pytest.raises(LtxAneError, match="one backend"):
        C.choose("spatial", "mlx,torch")
    assert C.choose("encoder", "torch,mlx").names == ["torch", "mlx"]


# ------------------------------------------------------------------------------------------- backends


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return write_vae(tmp_path_factory.mktemp("backends") / "vae.safetensors", small_config("ltx2"))


class AneRunner:
    """Stands in for a Core ML package off macOS: the ANE-layout torch rewrite that convert.py traces, with the
    same predict_numpy / function_for / metadata surface as ``coreml.runtime.CoreMLComponent``."""

    def __init__(self, ref, component, shapes, psnr="60.0"):
        from ltx_ane.coreml.rewrites import Variant, rewrite

        self.model = rewrite(ref, component, Variant())
        self.shapes = [tuple(s) for s in shapes]
        self.metadata = {"ltx_ane.component": component, "ltx_ane.fp16_psnr_db": psnr}
        self.compute_units = "CPU_AND_NE"

    def function_for(self, shape):
        if tuple(shape) not in self.shapes:
            raise LtxAneError(f"no function for {shape}")
        return "tile"

    def predict_numpy(self, x):
        self.function_for(x.shape)
        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def test_decoder_backends_agree(vae):
    decoder = load_decoder(Source(checkpoint=str(vae)), "fp32")
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 3, 16)).astype(np.float32)
    mlx_out = B.MLXBackend(decoder, "decoder")(x)
    assert mlx_out.shape == (1, 9, 64, 96, 3)
    torch_out = B.build(C.Choice("decoder", ["torch"], "t"), decoder)[0](x)
    ref = B.torch_from_mlx(decoder, "decoder")
    coreml = CoreMLBackend(AneRunner(ref, "decoder", [(2, 16, 2, 3)]), "decoder")
    assert coreml.supports(x.shape) and not coreml.supports((1, 3, 2, 3, 16)) and not coreml.any_shape
    for out in (torch_out, coreml(x)):
        assert np.abs(out - mlx_out).max() <= 1e-4 * np.abs(mlx_out).max()


def test_random_weights_reach_the_reference_backend():
    # --random-weights draws in MLX; the torch backend must hold the same weights, not its own draw.
    from ltx_ane.models.video_vae.config import DecoderConfig
    from ltx_ane.models.loading import randomize
    from ltx_ane.models.video_vae.model import VideoDecoder

    decoder = VideoDecoder(DecoderConfig.from_dict(small_config("ltx2")))
    randomize(decoder, mx.float32, seed=3)
    x = np.random.default_rng(1).standard_normal((1, 1, 2, 2, 16)).astype(np.float32)
    a = B.MLXBackend(decoder, "decoder")(x)
    b = B.build(C.Choice("decoder", ["torch"], "t"), decoder)[0](x)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_coreml_parity_gate_and_component_are_checked(vae):
    decoder = load_decoder(Source(checkpoint=str(vae)), "fp32")
    ref = B.torch_from_mlx(decoder, "decoder")
    with pytest.raises(LtxAneError, match="failed its parity gate"):
        CoreMLBackend(AneRunner(ref, "decoder", [], psnr="12.5"), "decoder")
    with pytest.raises(LtxAneError, match="holds the decoder, not the encoder"):
        CoreMLBackend(AneRunner(ref, "decoder", []), "encoder")
    with pytest.raises(LtxAneError, match="no chosen backend takes"):
        B.keep_supported([CoreMLBackend(AneRunner(ref, "decoder", []), "decoder")], (1, 2, 2, 2, 16))


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_upscaler_backends_agree(kind):
    cfg = load_preset(f"{kind}-x2")
    cfg.update(in_channels=16, mid_channels=32, num_blocks_per_stage=1)
    from ltx_ane.models.upscaler.config import UpsamplerConfig
    from ltx_ane.models.loading import randomize
    from ltx_ane.models.upscaler.model import LatentUpsampler

    model = LatentUpsampler(UpsamplerConfig.from_dict(cfg))
    randomize(model, mx.float32, seed=1)
    stats = random_statistics(16, seed=2)
    x = np.random.default_rng(3).standard_normal((1, 16, 2, 3, 2)).astype(np.float32)
    a = B.MLXBackend(model, kind, stats)(x)
    torch_backend = B.build(C.Choice(kind, ["torch"], "t"), model, stats)[0]
    ane = CoreMLBackend(AneRunner(torch_backend.module, kind, [(2, 16, 3, 2)]), kind, stats)
    assert a.shape == ((1, 16, 2, 6, 4) if kind == "spatial" else (1, 16, 3, 3, 2))
    for out in (torch_backend(x), ane(x)):
        assert np.abs(out - a).max() <= 1e-4 * np.abs(a).max()


# ------------------------------------------------------------------------------------------- gates, failover


class PackageStub:
    """A Core ML runner's metadata surface only (the gates read nothing else)."""

    compute_units = "CPU_AND_NE"

    def __init__(self, **meta):
        self.metadata = {"ltx_ane.component": "decoder", **{f"ltx_ane.{k}": v for k, v in meta.items()}}


@pytest.mark.parametrize("meta, refusal", [
    ({}, "no measured fp16 PSNR"),  # converted with --no-fp16-check
    ({"fp16_psnr_db": ""}, "no measured fp16 PSNR"),
    ({"fp16_psnr_db": "55.0", "compression": "int8"}, "no measured int8-compressed PSNR"),
    ({"fp16_psnr_db": "55.0", "compression": "int8", "compressed_psnr_db": "31.0"}, "failed its parity gate"),
    ({"fp16_psnr_db": "39.9"}, "failed its parity gate"),
])
def test_gates_fail_closed(meta, refusal):
    from ltx_ane.runtime.coreml_backend import GateRefused

    with pytest.raises(GateRefused, match=refusal) as err:
        CoreMLBackend(PackageStub(**meta), "decoder")
    assert "\n" not in str(err.value)
    if refusal.startswith("no measured"):  # an explicit override admits a missing measurement, never a failed one
        assert "--allow-ungated-package" in str(err.value)
        CoreMLBackend(PackageStub(**meta), "decoder", allow_ungated=True)
    else:
        with pytest.raises(GateRefused):
            CoreMLBackend(PackageStub(**meta), "decoder", allow_ungated=True)
    CoreMLBackend(PackageStub(fp16_psnr_db="40.0", compression="int8", compressed_psnr_db="41.0"), "decoder")


def test_auto_never_runs_an_ungated_package_and_explicit_says_why():
    decoder = load_decoder(Source(config=small_config("ltx2"), random_weights=True), "fp32")
    same = B.model_identity(decoder)
    notes = []
    auto = C.Choice("decoder", ["coreml:CPU_AND_NE"], "auto: fastest passing in profile", "d.mlpackage")
    built = B.build(auto, decoder, runner_factory=lambda package, unit: PackageStub(**same), log=notes.append)
    assert [b.name for b in built] == ["mlx"]
    assert any("no measured fp16 PSNR" in n for n in notes) and notes[-1] == "note: the decoder runs on mlx instead"
    explicit = C.Choice("decoder", ["coreml:CPU_AND_NE"], "as asked", "d.mlpackage")
    with pytest.raises(LtxAneError, match="no measured fp16 PSNR"):
        B.build(explicit, decoder, runner_factory=lambda package, unit: PackageStub(**same))
    built = B.build(explicit, decoder, runner_factory=lambda package, unit: PackageStub(**same), allow_ungated=True)
    assert [b.name for b in built] == ["coreml:CPU_AND_NE"]


def test_a_package_that_will_not_compile_is_dropped_and_the_others_run():
    class Uncompilable(PackageStub):
        @property
        def compiled(self):
            raise RuntimeError("Error compiling model: unsupported op\nlong traceback text")

    decoder = load_decoder(Source(config=small_config("ltx2"), random_weights=True), "fp32")
    notes = []
    choice = C.Choice("decoder", ["mlx", "coreml:CPU_AND_NE"], "as asked", "d.mlpackage")
    same = B.model_identity(decoder)
    built = B.build(choice, decoder, runner_factory=lambda package, unit: Uncompilable(fp16_psnr_db="50", **same),
                    log=notes.append)
    assert [b.name for b in built] == ["mlx"]
    assert notes == ["note: not using coreml:CPU_AND_NE: RuntimeError: Error compiling model: unsupported op"]
    alone = C.Choice("decoder", ["coreml:CPU_AND_NE"], "as asked", "d.mlpackage")
    with pytest.raises(LtxAneError, match="no backend for the decoder could be made: coreml:CPU_AND_NE: RuntimeError"):
        B.build(alone, decoder, runner_factory=lambda package, unit: Uncompilable(fp16_psnr_db="50", **same))


def test_the_weights_digest_is_the_same_on_both_sides_of_a_conversion_whatever_the_dtype(vae, tmp_path):
    from ltx_ane import reference as R
    from ltx_ane.coreml.package import weights_digest
    from ltx_ane.models import registry

    raw = small_config("ltx2")
    module = R.from_checkpoint("decoder", vae, raw)  # what the converter holds
    skipped = registry.spec("decoder").checkpoint_keys(raw).ignore
    converted = weights_digest((k, v.float().numpy()) for k, v in module.state_dict().items() if not skipped(k))
    for dtype in ("fp32", "bf16", "fp16"):
        assert B.model_identity(load_decoder(Source(checkpoint=str(vae)), dtype))["weights_digest"] == converted
    other = write_vae(tmp_path / "other.safetensors", raw, seed=1)
    assert B.model_identity(load_decoder(Source(checkpoint=str(other)), "bf16"))["weights_digest"] != converted


def test_a_package_from_other_weights_or_config_is_refused(vae, tmp_path):
    from ltx_ane.runtime.coreml_backend import GateRefused

    decoder = load_decoder(Source(checkpoint=str(vae)), "bf16")
    same = B.model_identity(decoder)
    randomized = load_decoder(Source(config=small_config("ltx2"), random_weights=True), "bf16")
    for meta, what in ((B.model_identity(randomized), "another weights"),
                       ({**same, "config_hash": "0" * 16}, "another config"), ({}, "another config")):
        with pytest.raises(GateRefused, match=what) as err:
            CoreMLBackend(PackageStub(fp16_psnr_db="50", **meta), "decoder", allow_ungated=True, identity=same)
        assert "convert it from this checkpoint" in str(err.value) and "\n" not in str(err.value)
    CoreMLBackend(PackageStub(fp16_psnr_db="50", **same), "decoder", identity=same)
    notes = []
    auto = C.Choice("decoder", ["mlx", "coreml:ALL"], "auto: fastest passing in profile", "d.mlpackage")
    built = B.build(auto, decoder, runner_factory=lambda p, u: PackageStub(fp16_psnr_db="50", **B.model_identity(randomized)),
                    log=notes.append)
    assert [b.name for b in built] == ["mlx"] and "another weights" in notes[0]
