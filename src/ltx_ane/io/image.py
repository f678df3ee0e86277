"""Conditioning images prepared exactly as ltx-pipelines prepares them (``load_image_conditioning``).

RGB uint8 -> one-frame H.264 round trip (libx264, CRF 33, preset veryfast, yuv420p, even size; the model was trained
on compressed frames) -> bilinear resize that covers the target (torch ``interpolate``, align_corners False, no
antialiasing) -> centre crop -> x / 127.5 - 1 -> (1, 3, 1, H, W) for the video VAE encoder.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import av
import mlx.core as mx
import numpy as np
from PIL import Image, UnidentifiedImageError

from ltx_ane.errors import LtxAneError

DEFAULT_IMAGE_CRF = 33


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. RGB(A) pixels are taken as stored, alpha dropped without compositing (ltx-pipelines);
    other modes (grey, palette, CMYK) are converted to RGB first."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGB")
            pixels = np.array(image)
    except FileNotFoundError:
        raise LtxAneError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise LtxAneError(f"cannot read image {path}: {e}") from None
    return np.ascontiguousarray(pixels[..., :3])


def h264_round_trip(pixels: np.ndarray, crf: int = DEFAULT_IMAGE_CRF) -> np.ndarray:
    """Encode one frame with libx264 at ``crf`` and decode it again; odd sizes lose their last row/column."""
    if crf == 0:
        return pixels
    height, width = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    if height == 0 or width == 0:
        raise LtxAneError(f"image of {pixels.shape[1]}x{pixels.shape[0]} pixels is too small")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = height, width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[:height, :width]), format="rgb24")
        container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = next(container.decode(video=0))
    return decoded.to_ndarray(format="rgb24")


def _fused_multiply_add(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once, as the FMA instructions torch's CPU kernel compiles to (the float32
    product is exact in float64)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def _bilinear_axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of torch's bilinear resize (align_corners=False) along one axis, in float32."""
    scale = np.full(dst, np.float32(src) / np.float32(dst), dtype=np.float32)
    centres = np.arange(dst, dtype=np.float32) + np.float32(0.5)
    position = np.maximum(_fused_multiply_add(scale, centres, np.full(dst, -0.5, np.float32)), np.float32(0))
    low = np.minimum(np.floor(position).astype(np.int64), src - 1)
    high = np.minimum(low + 1, src - 1)
    weight_high = np.clip(position - low.astype(np.float32), 0, 1).astype(np.float32)
    return low, high, weight_high


def _lerp(low: np.ndarray, high: np.ndarray, weight_high: np.ndarray) -> np.ndarray:
    weight_high = np.broadcast_to(weight_high, low.shape)
    return _fused_multiply_add(low, np.float32(1) - weight_high, high * weight_high)


def resize_and_center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) -> float32 (height, width, 3): scale to cover the target (ceil), bilinear, crop the middle.

    Bit-equal to torch's generic CPU kernel, which ltx-pipelines hits whenever the resized height + width exceed
    128 (every video size); torch's vectorized kernel for smaller outputs rounds differently in the last bit.
    """
    src_h, src_w = pixels.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    image = pixels.astype(np.float32)
    rows_low, rows_high, row_weight = _bilinear_axis(src_h, new_h)
    cols_low, cols_high, col_weight = _bilinear_axis(src_w, new_w)
    col_weight = col_weight[None, :, None]
    top = _lerp(image[rows_low][:, cols_low], image[rows_low][:, cols_high], col_weight)
    bottom = _lerp(image[rows_high][:, cols_low], image[rows_high][:, cols_high], col_weight)
    resized = _lerp(top, bottom, row_weight[:, None, None])
    top_crop, left_crop = (new_h - height) // 2, (new_w - width) // 2
    return resized[top_crop : top_crop + height, left_crop : left_crop + width]


def prepare_conditioning_image(
    path: str | Path, height: int, width: int, crf: int = DEFAULT_IMAGE_CRF, dtype: mx.Dtype = mx.float32
) -> mx.array:
    """The VAE encoder's input for one conditioning image: (1, 3, 1, height, width) in [-1, 1]."""
    pixels = resize_and_center_crop(h264_round_trip(read_image(path), crf), height, width)
    video = mx.array(pixels).transpose(2, 0, 1)[None, :, None]
    return (video / 127.5 - 1.0).astype(dtype)
