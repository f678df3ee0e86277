"""The background decode service under the faults a caller meets: a caller doing MLX work between reads, a second
submit, cancel after the end, timeouts, a failing callback, an exception inside the ``with`` block."""

from __future__ import annotations

import threading
import time

import mlx.core as mx
import numpy as np
import pytest

from ltx_ane.models.loading import Source
from ltx_ane.models.video_vae.loader import load_decoder
from ltx_ane.pipelines.video import decode_frames
from ltx_ane.runtime import backends as B
from ltx_ane.pipelines.service import Cancelled, DecodeService
from tests.vae_util import small_config, write_vae

TILE = (4, 2, 2)  # a (1, 16, 7, 2, 2) latent in 4 time tiles: 4 chunks


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    path = write_vae(tmp_path_factory.mktemp("service") / "vae.safetensors", small_config("ltx2"))
    return load_decoder(Source(checkpoint=str(path)), "fp32")


def latent(seed=0, frames=7):
    return np.random.default_rng(seed).standard_normal((1, 16, frames, 2, 2)).astype(np.float32)


class SlowMLX(B.MLXBackend):
    """MLX with a pause per tile, under its own name (a second backend for the scheduler)."""

    def __init__(self, model, name, delay):
        super().__init__(model, "decoder")
        self.name, self.delay = name, delay

    def __call__(self, x):
        time.sleep(self.delay)
        return super().__call__(x)


def finishes(fn, seconds: float):
    """Run ``fn`` on a thread; fail (instead of hanging the test run) when it is not done within ``seconds``."""
    out, errors = [], []

    def target():
        try:
            out.append(fn())
        except BaseException as e:  # handed to the test's thread
            errors.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if errors:
        raise errors[0]
    return out[0]


def no_service_threads():
    return not [t for t in threading.enumerate() if t.name.startswith("ltx-ane-")]


def test_a_caller_holding_the_mlx_lock_between_reads_and_a_second_submit_do_not_hang(decoder):
    expected = np.concatenate([np.array(c) for c in decode_frames(decoder, mx.array(latent()), TILE)], 1)
    backends = [B.MLXBackend(decoder, "decoder"), SlowMLX(decoder, "mlx2", 0.0)]

    def read_with_the_lock_between_chunks():
        chunks = []
        with DecodeService(decoder, tile=TILE, backends=backends, max_chunks=1) as service:
            first = service.submit(latent())
            for chunk in first:
                chunks.append(chunk)
                time.sleep(0.05)  # the service fills the queue meanwhile and waits for room
                with B.MLX_LOCK:  # as the module doc tells an MLX user to
                    mx.eval(mx.array(chunk) * 2)
                if len(chunks) == 1:
                    second = service.submit(mx.array(latent(1)))  # converts under the lock
            return chunks, second.result(timeout=60)

    chunks, second = finishes(read_with_the_lock_between_chunks, 120)
    assert len(chunks) == 4
    got = np.concatenate(chunks, 1)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert second.shape == expected.shape
    assert no_service_threads()


def test_cancel_after_the_end_keeps_the_chunks_readable(decoder):
    with DecodeService(decoder, tile=TILE, max_chunks=8) as service:
        handle = service.submit(latent())
        deadline = time.monotonic() + 60
        while not handle.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        handle.cancel()
        chunks = finishes(lambda: list(handle), 10)
    assert len(chunks) == 4


def test_cancel_while_nobody_reads_ends_the_iteration(decoder):
    with DecodeService(decoder, tile=TILE, backends=[SlowMLX(decoder, "slow", 0.05)], max_chunks=1) as service:
        handle = service.submit(latent())
        time.sleep(0.3)
        handle.cancel()
        with pytest.raises(Cancelled):
            finishes(lambda: list(handle), 30)


def test_result_honours_its_timeout_when_nobody_iterated(decoder):
    with DecodeService(decoder, tile=TILE, backends=[SlowMLX(decoder, "slow", 0.5)]) as service:
        handle = service.submit(latent())
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            finishes(lambda: handle.result(timeout=0.2), 10)
        assert time.monotonic() - start < 2
        handle.cancel()


def test_a_failing_on_done_is_reported_and_the_service_keeps_serving(decoder, capfd):
    def broken(error):
        raise RuntimeError("bug in the caller's callback")

    with DecodeService(decoder, tile=TILE) as service:
        first = service.submit(latent(), on_chunk=lambda c: None, on_done=broken)
        assert finishes(lambda: first.result(timeout=60), 70) is None
        second = service.submit(latent())
        assert finishes(lambda: second.result(timeout=60), 70).shape[1] == 49
    assert "on_done callback raised RuntimeError: bug in the caller's callback" in capfd.readouterr().err
    assert no_service_threads()


def test_an_exception_in_the_with_block_cancels_pending_work(decoder):
    handles = []

    def leave_on_an_exception():
        with pytest.raises(ValueError):
            with DecodeService(decoder, tile=TILE, backends=[SlowMLX(decoder, "slow", 0.2)], max_chunks=1) as service:
                handles.extend(service.submit(latent(i)) for i in range(3))  # nobody will read these
                time.sleep(0.3)
                raise ValueError("the caller's own error")

    finishes(leave_on_an_exception, 30)
    for handle in handles:
        with pytest.raises(Cancelled):
            handle.result(timeout=5)
    assert no_service_threads()
