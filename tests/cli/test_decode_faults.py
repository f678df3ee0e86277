"""Decoding as a user meets it: --fps against the latent's own rate, exact uint8 frames, Ctrl-C mid-decode."""

from __future__ import annotations

import threading
import time

import mlx.core as mx
import numpy as np
import pytest

from ltx_ane.cli.common import to_pixels, write_frames
from ltx_ane.cli.main import main
from ltx_ane.io.latents import LatentFile, read_video_tensor, write_latent
from ltx_ane.runtime.scheduler import concurrent
from ltx_ane.runtime.tiling import make_plan, run_tiled
from tests.vae_util import small_config, write_vae


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode")
    latent = np.random.default_rng(0).standard_normal((1, 16, 2, 2, 2), dtype=np.float32)
    write_latent(d / "latent.safetensors", LatentFile(latent=latent, fps=12.0))
    return {"vae": write_vae(d / "vae.safetensors", small_config("ltx2")), "latent": d / "latent.safetensors"}


def test_fps_applies_only_when_the_latent_carries_none(files, tmp_path, capsys):
    out = tmp_path / "a.safetensors"
    assert main(["decode", str(files["latent"]), "--vae", str(files["vae"]), "--fps", "30", "-o", str(out), "--quiet"]) == 0
    assert float(read_video_tensor(out)[1]["fps"]) == 12.0
    out = tmp_path / "b.safetensors"
    assert main(["decode", "--random-latent", "2x2x2", "--vae", str(files["vae"]), "--fps", "30", "-o", str(out),
                 "--quiet"]) == 0
    assert float(read_video_tensor(out)[1]["fps"]) == 30.0


def test_frames_become_uint8_from_float32():
    levels = np.linspace(-1, 1, 20001).astype(np.float16)  # fp16 chunks come from half-precision decodes
    expected = np.clip((levels.astype(np.float32) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(to_pixels(mx.array(levels)), expected)


class SlowDouble:
    def __init__(self, name):
        self.name = name

    def __call__(self, x):
        time.sleep(0.1)
        return 2 * x


def test_ctrl_c_during_a_decode_stops_the_workers_and_leaves_no_file(tmp_path, monkeypatch):
    from ltx_ane.io.latents import RawVideoWriter

    def interrupted(self, chunk):  # Ctrl-C lands while the first chunk is written
        raise KeyboardInterrupt

    monkeypatch.setattr(RawVideoWriter, "write", interrupted)
    plan = make_plan((9, 7, 7), (4, 3, 3), time_scale=1, space_scale=1, overlap=(1, 1))
    source = mx.array(np.random.default_rng(0).standard_normal((1, 9, 7, 7, 2)).astype(np.float32))
    chunks = run_tiled(plan, source, concurrent([SlowDouble("a"), SlowDouble("b")]), "decode")
    out = tmp_path / "frames.safetensors"
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        write_frames(chunks, out, (1, 2, 9, 7, 7), 24.0, 18)
    # Stopped within a tile's time; the workers are gone now (not when the traceback is collected); no file.
    assert time.perf_counter() - start < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("ltx-ane-")]
    assert list(tmp_path.iterdir()) == []
