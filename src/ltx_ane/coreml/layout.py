"""Host-side layout changes around the Core ML programs (NumPy only; no torch, no coremltools).

The programs take and return frames on the batch axis, (F, C, H, W), and leave patchify/unpatchify to the host:
the ANE pads every buffer's last axis to 64 bytes, so a 4-wide patch axis inside the program would waste 8x
memory and bandwidth. The 48 patch channels keep ltx-core's order (c, w-offset, h-offset), so these two
functions are exactly ltx-core's ``patchify``/``unpatchify`` with the batch dropped and frames moved first.
"""

from __future__ import annotations

import numpy as np


def video_to_frames(video: np.ndarray, patch: int = 4) -> np.ndarray:
    """(C, F, H, W) video -> (F, C*patch*patch, H/patch, W/patch) encoder input."""
    c, f, h, w = video.shape
    x = video.reshape(c, f, h // patch, patch, w // patch, patch)  # c f h q w r
    x = x.transpose(1, 0, 5, 3, 2, 4)  # f c r q h w
    return np.ascontiguousarray(x.reshape(f, c * patch * patch, h // patch, w // patch))


def frames_to_video(frames: np.ndarray, patch: int = 4) -> np.ndarray:
    """(F, C*patch*patch, h, w) decoder output -> (C, F, h*patch, w*patch) video."""
    f, cpp, h, w = frames.shape
    c = cpp // (patch * patch)
    x = frames.reshape(f, c, patch, patch, h, w)  # f c r q h w
    x = x.transpose(1, 0, 4, 3, 5, 2)  # c f h q w r
    return np.ascontiguousarray(x.reshape(c, f, h * patch, w * patch))


def latent_to_frames(latent: np.ndarray) -> np.ndarray:
    """(C, F, h, w) latent -> (F, C, h, w): frames on the batch axis."""
    return np.ascontiguousarray(latent.transpose(1, 0, 2, 3))


def frames_to_latent(frames: np.ndarray) -> np.ndarray:
    """(F, C, h, w) -> (C, F, h, w)."""
    return np.ascontiguousarray(frames.transpose(1, 0, 2, 3))
