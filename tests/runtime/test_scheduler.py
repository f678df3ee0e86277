"""Concurrent tile scheduling: fake backends for the bookkeeping, MLX (CPU) + ltx-core for the real thing."""

from __future__ import annotations

import threading
import time

import mlx.core as mx
import numpy as np
import pytest

from ltx_ane.runtime import backends as B
from ltx_ane.runtime import choice as C
from ltx_ane.errors import LtxAneError
from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder, load_encoder
from ltx_ane.pipelines.video import decode_frames, encode_video
from ltx_ane.runtime.scheduler import Throughput, concurrent, measure_throughput
from ltx_ane.runtime.tiling import make_plan, run_tiled, sequential
from tests.vae_util import small_config, write_vae


class Fake:
    """A backend doubling its tile, optionally slow or failing; records what it ran and its concurrency."""

    def __init__(self, name, delay=0.0, fail_on=None):
        self.name, self.delay, self.fail_on = name, delay, fail_on
        self.calls = []
        self.started, self.ended = [], []  # perf_counter at each call's start and (successful) end
        self.threads = set()

    def __call__(self, x):
        self.threads.add(threading.get_ident())
        self.calls.append(float(x.flat[0]))
        self.started.append(time.perf_counter())
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise LtxAneError("boom")
        time.sleep(self.delay)
        self.ended.append(time.perf_counter())
        return 2 * x


def identity_plan():
    # Scale 1 in time and space: a tile's output covers exactly its input, so doubling is a local operator.
    return make_plan((9, 7, 7), (4, 3, 3), time_scale=1, space_scale=1, overlap=(1, 1))


def source():
    return mx.array(np.random.default_rng(0).standard_normal((1, 9, 7, 7, 2)).astype(np.float32))


def collect(chunks):
    return [np.array(c) for c in chunks]


def test_two_backends_equal_one_every_tile_once_in_order_bounded():
    plan, x = identity_plan(), source()
    fast, slow = Fake("fast"), Fake("slow", delay=0.02)
    stats = Throughput()
    chunks = collect(run_tiled(plan, x, concurrent([fast, slow], max_in_flight=3, throughput=stats), "decode"))
    expected = collect(run_tiled(plan, x, sequential(lambda t: 2 * t), "decode"))
    assert [c.shape for c in chunks] == [c.shape for c in expected]  # same chunks, in time order
    np.testing.assert_allclose(np.concatenate(chunks, 1), 2 * np.array(x), rtol=1e-6, atol=1e-6)
    ran = stats.backends["fast"].tiles + stats.backends["slow"].tiles
    assert sorted(ran) == list(range(plan.num_tiles))  # each tile exactly once
    assert len(fast.calls) + len(slow.calls) == plan.num_tiles
    assert len(stats.backends["fast"].tiles) > len(stats.backends["slow"].tiles)  # free backends pull more
    assert stats.max_in_flight <= 3 and stats.limit == 3
    assert len(fast.threads) == len(slow.threads) == 1 and fast.threads != slow.threads
    assert "together" in stats.summary()


def test_in_flight_bound_holds_when_the_oldest_tile_is_slow():
    # Whichever backend takes tile 0 holds it for a while and so holds up hand-over; the other must stop after the
    # bound, not run ahead.
    plan, x = identity_plan(), source()
    tile0 = float(np.array(x).flat[0])

    class SlowOnTileZero(Fake):
        def __call__(self, tile):
            self.delay = 0.2 if float(tile.flat[0]) == tile0 else 0.0
            return super().__call__(tile)

    a, b = SlowOnTileZero("a"), SlowOnTileZero("b")
    first = next(iter(run_tiled(plan, x, concurrent([a, b], max_in_flight=2), "decode")))
    assert first.shape[1] > 0
    holder, other = (a, b) if a.calls and a.calls[0] == tile0 else (b, a)
    assert holder.calls[0] == tile0
    # Counted by what the backends saw, not by the scheduler's own bookkeeping: while tile 0 ran, the other backend
    # got exactly the one other tile the bound allows.
    assert len([t for t in other.started if t < holder.ended[0]]) == 1


def test_failing_backend_is_retired_and_its_tile_rerun_elsewhere():
    plan, x = identity_plan(), source()
    good, bad = Fake("good", delay=0.01), Fake("bad", fail_on=2)
    stats, notes = Throughput(), []
    chunks = collect(run_tiled(plan, x, concurrent([good, bad], throughput=stats, note=notes.append), "decode"))
    np.testing.assert_allclose(np.concatenate(chunks, 1), 2 * np.array(x), rtol=1e-6, atol=1e-6)
    assert len(bad.calls) == 2  # retired after its failure: it pulled nothing more
    assert sorted(stats.backends["good"].tiles + stats.backends["bad"].tiles) == list(range(plan.num_tiles))
    assert stats.backends["bad"].error == "boom" and stats.backends["good"].error is None
    assert len(notes) == 1 and notes[0].startswith("note: bad failed on tile") and "go to good" in notes[0]
    assert "(failed, retired)" in stats.summary()
    assert not [t for t in threading.enumerate() if t.name.startswith("ltx-ane-")]


def test_a_tile_failing_on_two_backends_goes_to_the_third():
    # One tile in flight: the failing backends, first in line for the queue, both get the same tile before the
    # good one does (repeated, so a scheduling order where they would not still leaves many runs where they do).
    plan, x = identity_plan(), source()
    for _ in range(10):
        a, b, good = Fake("a", fail_on=1), Fake("b", fail_on=1), Fake("good")
        stats, notes = Throughput(), []
        chunks = collect(run_tiled(plan, x, concurrent([a, b, good], max_in_flight=1, throughput=stats,
                                                       note=notes.append), "decode"))
        np.testing.assert_allclose(np.concatenate(chunks, 1), 2 * np.array(x), rtol=1e-6, atol=1e-6)
        assert stats.backends["good"].tiles == list(range(plan.num_tiles))
        assert len(notes) == 2 and stats.backends["a"].error == stats.backends["b"].error == "boom"


def test_backend_error_is_raised_when_none_is_left_or_without_failover():
    plan, x = identity_plan(), source()
    with pytest.raises(LtxAneError, match="every backend failed on tile") as err:
        collect(run_tiled(plan, x, concurrent([Fake("a", fail_on=1), Fake("b", fail_on=2), Fake("c", fail_on=1)],
                                              note=lambda m: None), "decode"))
    message = str(err.value)
    assert "\n" not in message and all(f"{n} on tile" in message and "(boom)" in message for n in "abc")
    with pytest.raises(LtxAneError, match="bad failed on tile"):
        collect(run_tiled(plan, x, concurrent([Fake("good", delay=0.01), Fake("bad", fail_on=1)], failover=False), "decode"))
    assert not [t for t in threading.enumerate() if t.name.startswith("ltx-ane-")]


def test_abandoned_run_stops_its_workers():
    plan, x = identity_plan(), source()
    gen = run_tiled(plan, x, concurrent([Fake("a", delay=0.01), Fake("b", delay=0.01)]), "decode")
    next(gen)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("ltx-ane-")]


def test_bad_arguments():
    with pytest.raises(LtxAneError, match="no backend"):
        concurrent([])
    with pytest.raises(LtxAneError, match="different names"):
        concurrent([Fake("a"), Fake("a")])


def test_measure_throughput_reports_alone_and_together():
    plan, x = identity_plan(), source()
    result = measure_throughput(plan, x, [Fake("a", delay=0.005), Fake("b", delay=0.005)])
    assert result["tiles"] == plan.num_tiles
    assert set(result["alone"]) == {"a", "b"} and all(v > 0 for v in result["alone"].values())
    assert result["together"] > 0 and sum(result["together_by_backend"].values()) == plan.num_tiles


# ------------------------------------------------------------------------------------------- real backends


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return write_vae(tmp_path_factory.mktemp("sched") / "vae.safetensors", small_config("ltx2"))


def test_decode_mlx_plus_reference_equals_mlx_alone(vae):
    decoder = load_decoder(Source(checkpoint=str(vae)), "fp32")
    latent = mx.array(np.random.default_rng(2).standard_normal((1, 16, 5, 4, 4)).astype(np.float32))
    tile = (4, 3, 3)  # 2 x 2 x 2 tiles
    alone = collect(decode_frames(decoder, latent, tile))
    backends = B.build(C.Choice("decoder", ["mlx", "torch"], "test"), decoder)
    stats = Throughput()
    together = collect(decode_frames(decoder, latent, tile, backends=backends, throughput=stats, max_in_flight=3))
    assert [c.shape for c in together] == [c.shape for c in alone]
    a, t = np.concatenate(alone, 1), np.concatenate(together, 1)
    assert np.abs(a - t).max() <= 1e-4 * np.abs(a).max()
    assert sorted(stats.backends["mlx"].tiles + stats.backends["torch"].tiles) == list(range(8))
    assert stats.backends["mlx"].tiles and stats.backends["torch"].tiles  # both ran tiles
    assert stats.max_in_flight <= 3


def test_encode_mlx_plus_reference_equals_mlx_alone(vae):
    encoder = load_encoder(Source(checkpoint=str(vae)), "fp32")
    video = mx.array(np.random.default_rng(3).uniform(-1, 1, (1, 3, 9, 128, 96)).astype(np.float32))
    tile = (2, 3, 3)  # 1 x 2 x 1 tiles (the encoder is the costly one on CPU)
    alone = np.array(encode_video(encoder, video, tile))
    backends = B.build(C.Choice("encoder", ["torch", "mlx"], "test"), encoder)
    together = np.array(encode_video(encoder, video, tile, backends=backends))
    assert together.shape == alone.shape == (1, 16, 2, 4, 3)
    assert np.abs(alone - together).max() <= 1e-4 * np.abs(alone).max()


# ------------------------------------------------------------------------------------------- service


def test_decode_service_streams_without_blocking_the_caller(vae):
    from ltx_ane.pipelines.service import Cancelled, DecodeService

    decoder = load_decoder(Source(checkpoint=str(vae)), "fp32")
    latent = np.random.default_rng(4).standard_normal((1, 16, 5, 2, 2)).astype(np.float32)
    expected = np.concatenate(collect(decode_frames(decoder, mx.array(latent), (4, 2, 2))), 1)
    backends = B.build(C.Choice("decoder", ["mlx", "torch"], "test"), decoder)
    for used in (None, backends):
        with DecodeService(decoder, tile=(4, 2, 2), backends=used, max_chunks=1) as service:
            start = time.perf_counter()
            handle = service.submit(latent)
            assert time.perf_counter() - start < 0.5  # returns before the decode is done
            chunks = list(handle)
            assert len(chunks) == 2 and handle.done()
            got = np.concatenate(chunks, 1)
            assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()

            seen, finished = [], threading.Event()
            cb = service.submit(mx.array(latent), on_chunk=seen.append, on_done=lambda e: finished.set())
            assert cb.result(timeout=60) is None and finished.is_set()
            assert np.abs(np.concatenate(seen, 1) - expected).max() <= 1e-4 * np.abs(expected).max()

            bad = service.submit(latent[:, :, :1])
            bad.cancel()
            with pytest.raises(Cancelled):
                bad.result(timeout=60)
            with pytest.raises(LtxAneError, match="channels"):
                service.submit(latent[:, :3])
    assert not [t for t in threading.enumerate() if t.name.startswith("ltx-ane-")]
