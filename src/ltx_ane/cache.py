"""Where the project keeps what it makes for itself: the bench profile, the prompt cache, compiled Core ML models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LTX_ANE_CACHE``, default ``~/.cache/ltx-ane``; read at each call, so a changed environment is honoured."""
    return Path(os.environ.get("LTX_ANE_CACHE", "~/.cache/ltx-ane")).expanduser()
