"""Video and image files in and out: PyAV decoding, streamed H.264 MP4 writing, and fitting to the VAE's grid.

In memory a video is float32 (B, 3, F, H, W) or (3, F, H, W) in [-1, 1]; on disk it is RGB24 via PyAV.
"""

from __future__ import annotations

import contextlib
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.io.audio import AudioTrack
from ltx_ane.io.latents import atomic_output, read_video_tensor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _av():
    try:
        import av
    except ImportError:
        raise LtxAneError("reading or writing video needs PyAV: pip install av") from None
    return av


def to_uint8_frames(chunk: np.ndarray) -> np.ndarray:
    """(3, F, H, W) float in [-1, 1] -> (F, H, W, 3) uint8."""
    chunk = np.asarray(chunk, dtype=np.float32)
    if chunk.ndim != 4 or chunk.shape[0] != 3:
        raise LtxAneError(f"expected a (3, F, H, W) float video chunk, got shape {list(chunk.shape)}")
    pixels = np.rint(((chunk + 1.0) * 0.5).clip(0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 2, 3, 0))


def fps_fraction(fps: float | Fraction) -> Fraction:
    """A rational frame rate; 23.976, 29.97 and 59.94 mean the NTSC rates (n * 1000/1001)."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        fps = float(fps)
        if not np.isfinite(fps) or fps <= 0:
            raise LtxAneError(f"fps must be a positive number, got {fps}")
        # Players and editors expect the exact NTSC fractions, not 2997/125, for the rounded values people type.
        if abs(fps - round(fps)) < 1e-3:
            rate = Fraction(round(fps))
        elif abs(fps * 1.001 - round(fps * 1.001)) < 2e-3:
            rate = Fraction(round(fps * 1.001) * 1000, 1001)
        else:
            rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise LtxAneError(f"fps must be positive, got {fps}")
    return rate


class Mp4Writer:
    """Stream frames into an H.264 (yuv420p) MP4 that appears under ``path`` only once complete.

    ``with Mp4Writer(path, fps) as w: w.write(chunk)``; chunks are (F, H, W, 3) uint8 or (3, F, H, W) float
    in [-1, 1]. An exception inside the block leaves neither the file nor a temporary one behind.
    With ``audio`` the track is encoded as AAC and interleaved with the frames as they arrive.
    """

    def __init__(self, path: str | Path, fps: float | Fraction, crf: int = 18, audio: AudioTrack | None = None):
        self.path = Path(path)
        self.audio = audio
        self.audio_written = 0
        self.rate = fps_fraction(fps)
        self.crf = int(crf)
        if not 0 <= self.crf <= 51:
            raise LtxAneError(f"crf must be between 0 and 51, got {crf}")
        self.frames_written = 0
        self._stack: contextlib.ExitStack | None = None
        self._container = None
        self._stream = None
        self._audio_stream = None

    def __enter__(self) -> Mp4Writer:
        av = _av()
        stack = contextlib.ExitStack()
        tmp = stack.enter_context(atomic_output(self.path, suffix=".mp4"))
        try:
            # The final name may lack an .mp4 suffix, so the muxer is named rather than guessed.
            self._container = av.open(str(tmp), mode="w", format="mp4")
        except BaseException as e:
            stack.__exit__(type(e), e, e.__traceback__)
            if not isinstance(e, Exception):
                raise
            raise LtxAneError(f"cannot write {self.path}: {_one_line(e)}") from None
        self._stack = stack
        return self

    def _open_stream(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise LtxAneError(f"H.264 yuv420p needs an even width and height, got {width}x{height}")
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(self.crf)}
        # Tag BT.709 limited range (what the frames are converted to), so players do not guess BT.601 for HD.
        cc = stream.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = 1  # AVCOL_*_BT709
        cc.color_range = 1  # AVCOL_RANGE_MPEG
        self._stream = stream
        if self.audio is not None:
            # Added with the video stream: the header, written at the first packet, must list every stream.
            audio = self._container.add_stream("aac", rate=self.audio.sample_rate)
            audio.layout = "stereo" if self.audio.channels == 2 else "mono"
            self._audio_stream = audio

    def _write_audio_until(self, container, sample: int) -> None:
        """Encode the track up to ``sample`` (PyAV cuts the pieces into the encoder's frame size)."""
        sample = min(sample, self.audio.samples.shape[1])
        if sample <= self.audio_written:
            return
        piece = np.ascontiguousarray(self.audio.samples[:, self.audio_written : sample], dtype=np.float32)
        frame = _av().AudioFrame.from_ndarray(piece, format="fltp", layout=self._audio_stream.layout.name)
        frame.sample_rate, frame.pts = self.audio.sample_rate, self.audio_written
        container.mux(self._audio_stream.encode(frame))
        self.audio_written = sample

    def write(self, chunk: np.ndarray) -> None:
        if self._container is None:
            raise LtxAneError("Mp4Writer.write called outside its with-block")
        chunk = np.asarray(chunk)
        if chunk.dtype != np.uint8:
            chunk = to_uint8_frames(chunk)
        elif chunk.ndim != 4 or chunk.shape[-1] != 3:
            raise LtxAneError(f"expected (F, H, W, 3) uint8 frames, got shape {list(chunk.shape)}")
        _, height, width, _ = chunk.shape
        if self._stream is None:
            self._open_stream(height, width)
        elif (height, width) != (self._stream.height, self._stream.width):
            raise LtxAneError(
                f"frame size changed from {self._stream.width}x{self._stream.height} to {width}x{height}"
            )
        av = _av()
        for pixels in chunk:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
            frame.pts = self.frames_written
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1
        if self._audio_stream is not None:
            self._write_audio_until(self._container, math.ceil(self.frames_written * self.audio.sample_rate / self.rate))

    def __exit__(self, exc_type, exc, tb) -> None:
        container, stack = self._container, self._stack
        self._container = self._stack = None
        if stack is None:
            return
        if exc_type is not None:
            with contextlib.suppress(Exception):
                container.close()
            stack.__exit__(exc_type, exc, tb)  # removes the temporary file; the exception propagates
            return
        try:
            if self._stream is None:
                raise LtxAneError(f"no frames were written to {self.path}")
            container.mux(self._stream.encode(None))  # flush the frames the encoder is holding back
            if self._audio_stream is not None:
                self._write_audio_until(container, self.audio.samples.shape[1])
                container.mux(self._audio_stream.encode(None))
            container.close()
        except BaseException as e:
            with contextlib.suppress(Exception):
                container.close()
            stack.__exit__(type(e), e, e.__traceback__)
            if isinstance(e, LtxAneError) or not isinstance(e, Exception):
                raise
            raise LtxAneError(f"cannot write {self.path}: {_one_line(e)}") from None
        stack.__exit__(None, None, None)


def _is_image(path: Path, container) -> bool:
    name = container.format.name
    return path.suffix.lower() in IMAGE_SUFFIXES or name == "image2" or name.endswith("_pipe")


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """Decode a video or image file with PyAV: ((3, F, H, W) float32 in [-1, 1], fps or None for an image)."""
    av = _av()
    path = Path(path)
    if not path.exists():
        raise LtxAneError(f"input not found: {path}")
    if path.is_dir():
        raise LtxAneError(f"input is a directory: {path}")
    if max_frames is not None and max_frames < 1:
        raise LtxAneError(f"max_frames must be at least 1, got {max_frames}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise LtxAneError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            image = _is_image(path, container)
            rate = None if image else (stream.average_rate or stream.guessed_rate)
            limit = 1 if image else max_frames
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(frames) >= limit:
                    break
    except av.FFmpegError as e:
        raise LtxAneError(f"cannot read {path}: {_one_line(e)}") from None
    except OSError as e:
        raise LtxAneError(f"cannot read {path}: {e.strerror or e}") from None
    if not frames:
        raise LtxAneError(f"{path} contains no decodable frames")
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise LtxAneError(f"{path}: frame size changes mid-stream ({', '.join(f'{s[1]}x{s[0]}' for s in sizes)})")
    video = np.stack(frames).transpose(3, 0, 1, 2).astype(np.float32, order="C")
    video *= 2.0 / 255.0
    video -= 1.0
    return video, (float(rate) if rate else None)


def _one_line(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())


def read_input(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """Any input video: ((B, 3, F, H, W) float32 in [-1, 1], fps or None).

    ``.safetensors`` is a raw-video file (its batch is kept); anything else is decoded by PyAV with B = 1.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        video, fps = read_video(path, max_frames)
        return video[None], fps
    video, meta = read_video_tensor(path)
    if video.shape[1] != 3:
        raise LtxAneError(f"{path}: video must have 3 channels, got shape {list(video.shape)}")
    if video.shape[2] == 0:
        raise LtxAneError(f"{path} contains no frames")
    if max_frames is not None:
        video = video[:, :, :max_frames]
    fps = None
    if "fps" in meta:
        try:
            fps = float(meta["fps"])
        except ValueError:
            raise LtxAneError(f"{path}: metadata fps={meta['fps']!r} is not a number") from None
    return video, fps


def _resize_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices and weights (size_out, taps) of a triangle filter widened when shrinking (anti-aliased)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centers = (np.arange(size_out) + 0.5) * scale
    first = np.floor(centers - support).astype(np.int64)
    taps = int(np.ceil(2 * support)) + 2
    index = first[:, None] + np.arange(taps)[None, :]
    weight = np.maximum(0.0, 1.0 - np.abs(index + 0.5 - centers[:, None]) / support)
    # Taps falling off the edge are dropped and the rest renormalised, so borders keep their brightness.
    weight[(index < 0) | (index >= size_in)] = 0.0
    weight /= weight.sum(axis=1, keepdims=True)
    return np.clip(index, 0, size_in - 1), weight.astype(np.float32)


def _resize_axis(video: np.ndarray, axis: int, size_out: int) -> np.ndarray:
    if video.shape[axis] == size_out:
        return video
    index, weight = _resize_weights(video.shape[axis], size_out)
    moved = np.moveaxis(video, axis, -1)
    out = np.zeros(moved.shape[:-1] + (size_out,), dtype=np.float32)
    for tap in range(index.shape[1]):
        out += moved[..., index[:, tap]] * weight[:, tap]
    return np.moveaxis(out, -1, axis)


def resize_video(video: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize the last two axes (area-like when shrinking, bilinear when enlarging)."""
    video = np.asarray(video, dtype=np.float32)
    return np.ascontiguousarray(_resize_axis(_resize_axis(video, video.ndim - 2, height), video.ndim - 1, width))


def fit_to_vae(
    video: np.ndarray, time_scale: int = 8, space_scale: int = 32, crop: bool = False, resize: bool = False
) -> np.ndarray:
    """Make a (..., F, H, W) video fit the VAE: F = time_scale*k + 1, H and W multiples of space_scale.

    Without ``crop`` or ``resize`` a misfit is an error naming the flag that fixes it. ``crop`` drops trailing
    frames and centre-crops; ``resize`` drops trailing frames too but scales H, W to the nearest multiple.
    """
    frames, height, width = video.shape[-3:]
    if frames == 0:
        raise LtxAneError("the video has no frames")
    if height < space_scale or width < space_scale:
        raise LtxAneError(f"the video is {width}x{height}; the VAE needs at least {space_scale}x{space_scale}")
    fit_frames = (frames - 1) // time_scale * time_scale + 1
    crop_h, crop_w = height // space_scale * space_scale, width // space_scale * space_scale
    near_h, near_w = (max(1, round(s / space_scale)) * space_scale for s in (height, width))

    if not (crop or resize):
        problems = []
        if fit_frames != frames:
            dropped = frames - fit_frames
            problems.append(
                f"{frames} frames is not {time_scale}k+1: pass --crop to drop the last "
                f"{dropped} frame{'s' if dropped > 1 else ''}"
            )
        for label, size, cropped, near in (("height", height, crop_h, near_h), ("width", width, crop_w, near_w)):
            if size % space_scale:
                problems.append(
                    f"{label} {size} is not a multiple of {space_scale}: pass --crop to crop it to {cropped} "
                    f"or --resize to resize it to {near}"
                )
        if problems:
            raise LtxAneError("; ".join(problems))
        return video

    video = video[..., :fit_frames, :, :]
    if resize:
        return resize_video(video, near_h, near_w)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return video[..., top : top + crop_h, left : left + crop_w]
