"""Core ML conversion of the LTX-2 components for the Apple Neural Engine.

Everything here except ``graph`` (package inspection) and ``layout`` (host-side patchify) needs the ``coreml``
extra (coremltools, torch, ltx-core); the MLX path never imports this package.
"""
