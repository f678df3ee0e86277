"""Kernel counts read from MLX's lazy graph, for the tests and the scripts in ``benchmarks/``.

On a GPU a short call's time is mostly kernel launches, so the models are written for few of them; counting the
graph's operations (before it is evaluated) shows how many a call launches without a GPU or a profiler.
"""

from __future__ import annotations

import io
import re

# Operations that only make views (no kernel of their own on a GPU).
VIEWS = frozenset({"Slice", "Broadcast", "Reshape", "Transpose", "ExpandDims", "Squeeze", "AsStrided"})


def kernel_ops(arrays) -> list[str]:
    """The operations the lazy graph behind ``arrays`` would run, views left out: each is one kernel launch on a
    GPU (a ``Compiled...`` entry is one fused kernel). Read from MLX's graph export, so inputs already
    evaluated count nothing."""
    import mlx.core as mx

    text = io.StringIO()
    mx.export_to_dot(text, arrays)
    return [name for name in re.findall(r'\[label ="([^"]*)"', text.getvalue()) if name not in VIEWS]
