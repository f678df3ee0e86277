"""Importing coremltools (and torch/ltx-core) with the known incompatibilities handled.

- coremltools 9.0 has no converter for ``aten::concatenate``, which ltx-core's CausalConv3d calls; it is the
  same op as ``cat``, so it is registered as an alias. (torch 2.13's tracer happens to record it as
  ``aten::cat``; other torch versions and scripted graphs keep ``aten::concatenate``.)
- With NumPy >= 2.4, coremltools 9.0's handling of traced shape arithmetic raises
  ``TypeError: only 0-dimensional arrays can be converted to Python scalars``; the ``coreml`` extra pins
  ``numpy<2.4`` and conversion refuses to start on a newer NumPy rather than fail half-way.
- On Linux, importing coremltools logs several "Failed to load ..." warnings about its macOS-only runtime;
  they are expected there and are silenced.
"""

from __future__ import annotations

import logging

from ltx_ane.errors import LtxAneError

EXTRA_HINT = "pip install 'ltx-ane[coreml]'"
NUMPY_LIMIT = (2, 4)


def numpy_too_new(version: str) -> bool:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) >= NUMPY_LIMIT


def check_numpy() -> None:
    import numpy

    if numpy_too_new(numpy.__version__):
        raise LtxAneError(
            f"NumPy {numpy.__version__} is too new for coremltools 9.0 (its torch frontend fails with "
            "'only 0-dimensional arrays can be converted to Python scalars' from NumPy 2.4 on): "
            "pip install 'numpy<2.4'"
        )


def import_coremltools():
    """coremltools, quietly; a one-line error when the extra is missing."""
    quiet = logging.getLogger("coremltools")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import coremltools as ct
    except ImportError:
        raise LtxAneError(f"coremltools is not installed (Core ML needs the coreml extra: {EXTRA_HINT})") from None
    finally:
        quiet.setLevel(level)
    return ct


def require_conversion():
    """coremltools + torch + ltx-core for conversion, with the concatenate alias registered."""
    check_numpy()
    try:
        import ltx_core  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise LtxAneError(f"{e.name} is not installed (Core ML conversion needs the coreml extra: {EXTRA_HINT})") from None
    ct = import_coremltools()
    _register_concatenate()
    return ct


def _register_concatenate() -> None:
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    if _TORCH_OPS_REGISTRY.get_func("concatenate") is None:
        _TORCH_OPS_REGISTRY.set_func_by_name(ops.cat, "concatenate")
