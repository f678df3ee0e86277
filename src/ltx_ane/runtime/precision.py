"""Full float32 where the project promises float32: the ``fp32`` dtype and the bench's fp32 references.

MLX runs float32 matmul, convolution and attention at TF32-class precision on hardware with matrix units (CUDA,
M5-generation Macs) unless ``MLX_ENABLE_TF32=0`` (MLX's "Numerical Precision" page). MLX reads the variable once,
into a function-local static (``env::enable_tf32`` in ``mlx/utils.h``), the first time a float32 op of that family
asks, and keeps that value for the process: it must be set before the first float32 MLX op, so the command line
sets it right after parsing, before any model loads. torch's cuDNN allows TF32 convolutions by default too
(``torch.backends.cudnn.allow_tf32``); the reference side turns that off the same way.
"""

from __future__ import annotations

import os
import sys

TF32_VARIABLE = "MLX_ENABLE_TF32"


def full_fp32_mlx() -> None:
    """Ask MLX for full float32 (takes effect when no float32 matmul-family op has run in this process yet)."""
    os.environ[TF32_VARIABLE] = "0"


def full_fp32_torch() -> None:
    """Turn off TF32 for torch's float32 matmuls and cuDNN convolutions (process-wide; half precision is unaffected)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def fp32_record() -> dict:
    """What float32 means in this process, for a benchmark's machine record."""
    value = os.environ.get(TF32_VARIABLE)
    record = {"MLX_ENABLE_TF32": value, "mlx_fp32_full_precision": value == "0"}
    if "torch" in sys.modules:
        import torch

        record["torch_fp32_full_precision"] = not (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    return record
