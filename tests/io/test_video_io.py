from fractions import Fraction

import av
import numpy as np
import pytest

from ltx_ane.errors import LtxAneError
from ltx_ane.io.latents import write_video_tensor
from ltx_ane.io.video import Mp4Writer, fit_to_vae, fps_fraction, read_input, read_video, to_uint8_frames


def smooth_video(frames=17, height=64, width=96):
    """(3, F, H, W) in [-1, 1]: gradients that drift over time, easy on a lossy codec."""
    t, y, x = np.meshgrid(
        np.linspace(0, 1, frames), np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij"
    )
    rgb = np.stack([x * 0.8 + t * 0.2, y * 0.7 + 0.1, (1 - x) * 0.5 + y * 0.3 * (1 - t)])
    return (rgb * 2 - 1).astype(np.float32)


def write_png(path, pixels):
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.height, stream.width = pixels.shape[:2]
        stream.pix_fmt = "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))


def leftovers(directory, name):
    return [p.name for p in directory.iterdir() if p.name != name]


def test_to_uint8_frames():
    chunk = np.array([-1.5, -1.0, 0.0, 1.0, 2.0], np.float32).reshape(1, 1, 1, 5).repeat(3, axis=0)
    out = to_uint8_frames(chunk)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_fps_fraction():
    assert fps_fraction(24) == 24
    assert fps_fraction(23.976) == Fraction(24000, 1001)
    assert fps_fraction(29.97) == Fraction(30000, 1001)
    assert fps_fraction(12.5) == Fraction(25, 2)
    with pytest.raises(LtxAneError):
        fps_fraction(0)


def test_mp4_round_trip_in_two_chunks(tmp_path):
    video = smooth_video()
    out = tmp_path / "clip.mp4"
    with Mp4Writer(out, fps=24) as writer:
        writer.write(video[:, :9])  # float chunk
        writer.write(to_uint8_frames(video[:, 9:]))  # uint8 chunk
    assert leftovers(tmp_path, "clip.mp4") == []
    decoded, fps = read_input(out)
    assert decoded.shape == (1, 3, 17, 64, 96) and decoded.dtype == np.float32
    assert fps == 24.0
    assert np.abs(decoded[0] - video).mean() * 127.5 < 6  # in 0..255 steps

    first4, _ = read_video(out, max_frames=4)
    assert first4.shape == (3, 4, 64, 96)


def test_ntsc_rate_survives(tmp_path):
    out = tmp_path / "ntsc.mp4"
    with Mp4Writer(out, fps=23.976) as writer:
        writer.write(smooth_video(frames=3, height=32, width=32))
    assert read_input(out)[1] == pytest.approx(24000 / 1001)


def test_exception_in_block_leaves_nothing(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, fps=24) as writer:
            writer.write(smooth_video(frames=3))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(LtxAneError, match="even"):
        with Mp4Writer(tmp_path / "odd.mp4", fps=24) as writer:
            writer.write(np.zeros((2, 33, 64, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error(tmp_path):
    with pytest.raises(LtxAneError, match="no frames"):
        with Mp4Writer(tmp_path / "empty.mp4", fps=24):
            pass
    assert list(tmp_path.iterdir()) == []


def test_png_reads_as_one_frame(tmp_path):
    pixels = np.zeros((40, 48, 3), np.uint8)
    pixels[:, :, 0] = np.arange(48, dtype=np.uint8)[None] * 5
    pixels[10:20, :, 2] = 255
    path = tmp_path / "still.png"
    write_png(path, pixels)
    video, fps = read_input(path)
    assert fps is None
    assert video.shape == (1, 3, 1, 40, 48)
    np.testing.assert_allclose((video[0, :, 0].transpose(1, 2, 0) + 1) * 127.5, pixels, atol=1e-3)


def test_safetensors_keeps_batch(tmp_path):
    video = np.random.default_rng(0).uniform(-1, 1, (2, 3, 9, 32, 32)).astype(np.float32)
    path = tmp_path / "raw.safetensors"
    write_video_tensor(path, video, fps=25.0)
    out, fps = read_input(path, max_frames=5)
    assert fps == 25.0
    np.testing.assert_array_equal(out, video[:, :, :5])


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_corrupt_file_is_an_error(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(LtxAneError, match="broken.mp4") as info:
        read_input(path)
    assert "\n" not in str(info.value)


def test_truncated_mp4_is_an_error(tmp_path):
    path = tmp_path / "clip.mp4"
    with Mp4Writer(path, fps=24) as writer:
        writer.write(smooth_video(frames=9))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(LtxAneError):
        read_input(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(LtxAneError, match="not found"):
        read_input(tmp_path / "nope.mov")


def test_fit_to_vae_accepts_a_fitting_video():
    video = np.zeros((1, 3, 17, 64, 96), np.float32)
    assert fit_to_vae(video) is video


def test_fit_to_vae_explains_misfits():
    with pytest.raises(LtxAneError, match=r"123 frames is not 8k\+1: pass --crop to drop the last 2 frames"):
        fit_to_vae(np.zeros((3, 123, 64, 64), np.float32))
    with pytest.raises(LtxAneError, match=r"width 100 is not a multiple of 32: .*--crop.* 96 .*--resize.* 96"):
        fit_to_vae(np.zeros((3, 9, 64, 100), np.float32))
    with pytest.raises(LtxAneError, match="no frames"):
        fit_to_vae(np.zeros((3, 0, 64, 64), np.float32), crop=True)
    with pytest.raises(LtxAneError, match="at least 32x32"):
        fit_to_vae(np.zeros((3, 9, 16, 64), np.float32), resize=True)


def test_fit_to_vae_crop_takes_the_centre():
    video = np.arange(20 * 70 * 100, dtype=np.float32).reshape(1, 1, 20, 70, 100)
    out = fit_to_vae(video, crop=True)
    assert out.shape == (1, 1, 17, 64, 96)
    np.testing.assert_array_equal(out, video[:, :, :17, 3:67, 2:98])


def test_fit_to_vae_resize_scales_to_nearest_multiple():
    video = smooth_video(frames=10, height=50, width=100)
    out = fit_to_vae(video, resize=True)
    assert out.shape == (3, 9, 64, 96)
    # A smooth gradient stays a gradient, within range, with its mean preserved.
    assert out.min() >= video.min() - 1e-5 and out.max() <= video.max() + 1e-5
    np.testing.assert_allclose(out.mean(axis=(2, 3)), video[:, :9].mean(axis=(2, 3)), atol=0.02)


def test_resize_of_a_constant_is_constant():
    video = np.full((3, 1, 100, 37), 0.25, np.float32)
    out = fit_to_vae(video, resize=True)
    assert out.shape == (3, 1, 96, 32)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
