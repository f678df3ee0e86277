"""What every component's config shares: checked readers of raw config values, presets, config files, hashes.

Checkpoints embed their config as JSON under the safetensors metadata key ``config``. Each model family reads its
section into a dataclass (``models/<family>/config.py``); keys that are absent take ltx-core 1.0.0's defaults, so a
config means here exactly what it means to the reference.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from ltx_ane.errors import LtxAneError

# Full configs (every component's section, as the checkpoints embed them): the released models, and "tiny", LTX-2
# at reduced widths (2 transformer layers) for trying the pipeline with random weights on a small machine.
MODEL_PRESETS = {"ltx2": "ltx2.json", "ltx23": "ltx23.json", "tiny": "tiny.json"}
# The upscalers ship as separate files with configs of their own.
UPSCALER_PRESETS = {"spatial-x2": "ltx2_spatial_upscaler_x2.json", "temporal-x2": "ltx2_temporal_upscaler_x2.json"}
PRESETS = {**MODEL_PRESETS, **UPSCALER_PRESETS}


def choice(section: dict, key: str, default: str, allowed, prefix: str = "vae.") -> str:
    value = section.get(key, default)
    if value not in allowed:
        raise LtxAneError(f"config key {prefix}{key}: unsupported value {value!r} (supported: {', '.join(sorted(allowed))})")
    return value


def positive_int(section: dict, key: str, default: int, prefix: str = "vae.") -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LtxAneError(f"config key {prefix}{key} must be a positive integer, got {value!r}")
    return value


def load_preset(name: str) -> dict:
    """The raw JSON of a shipped config: a full model's ('ltx2', 'ltx23', 'tiny'; sections ``transformer``,
    ``vae``, ``audio_vae``, ``vocoder``, ``scheduler``) or an upscaler's ('spatial-x2', 'temporal-x2')."""
    if name not in PRESETS:
        raise LtxAneError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return json.loads(resources.files("ltx_ane.models.presets").joinpath(PRESETS[name]).read_text())


def load_config_file(path: str | Path) -> dict:
    """A ``--config`` file: JSON in the form checkpoints embed, or a preset name."""
    if str(path) in PRESETS:
        return load_preset(str(path))
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LtxAneError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LtxAneError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise LtxAneError(f"config file {path} must hold a JSON object")
    return data


def config_hash(raw: dict) -> str:
    """A short stable digest of a config, for cache keys and file metadata."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]
