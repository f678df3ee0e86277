"""The saved backend profile: for each component and tile shape, the fastest backend that passed parity.

Written by ``ltx-ane bench``; read by whatever picks a backend at run time. Standard library only, so a
reader never pays for MLX, torch or coremltools. Format (JSON, one file per machine)::

    {
      "format": 1,
      "machine": {"chip": "Apple M3 Max", "os": "Darwin 24.1.0", ...},
      "created": "2026-01-01T12:00:00Z",
      "entries": [
        {"component": "decoder",          # decoder | encoder | spatial | temporal
         "tile": [3, 8, 8],               # latent units [F, h, w] of one call's input (encoder: its output)
         "backend": "coreml:CPU_AND_NE",  # mlx | torch | coreml:<compute unit>
         "median_s": 0.123,
         "passed_parity": true,
         "package": "/path/decoder.mlpackage"}  # Core ML only, when bench ran with --work-dir
      ]
    }

One entry per (component, tile): the fastest backend whose output passed the parity gate, or, when none
passed, the fastest one with ``passed_parity: false`` (so a reader sees it was measured and rejected).
Default location: ``~/.cache/ltx-ane/profile.json`` (``$LTX_ANE_CACHE/profile.json`` when that is set).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ltx_ane.errors import LtxAneError

FORMAT = 1
COMPONENTS = ("decoder", "encoder", "spatial", "temporal")


def default_path() -> Path:
    return Path(os.environ.get("LTX_ANE_CACHE", "~/.cache/ltx-ane")).expanduser() / "profile.json"


def _tile(value) -> list[int]:
    tile = [int(v) for v in value]
    if len(tile) != 3 or min(tile) < 1:
        raise ValueError(f"tile {value!r} is not [F, h, w] of positive integers")
    return tile


def _check(profile: dict, where: str) -> dict:
    if not isinstance(profile, dict) or not isinstance(profile.get("entries"), list):
        raise LtxAneError(f"{where}: not a backend profile (no 'entries' list)")
    for i, e in enumerate(profile["entries"]):
        try:
            if e["component"] not in COMPONENTS:
                raise ValueError(f"unknown component {e['component']!r}")
            e["tile"] = _tile(e["tile"])
            if not isinstance(e["backend"], str):
                raise ValueError("backend is not a string")
            e["median_s"] = float(e["median_s"])
            e["passed_parity"] = bool(e["passed_parity"])
        except (KeyError, TypeError, ValueError) as err:
            raise LtxAneError(f"{where}: entry {i} is malformed ({err})") from None
    profile.setdefault("machine", {})
    return profile


def read_profile(path: str | Path | None = None) -> dict | None:
    """The profile at ``path`` (default location if None), or None when there is none yet."""
    path = Path(path) if path else default_path()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LtxAneError(f"cannot read backend profile {path}: {err}") from None
    return _check(data, str(path))


def write_profile(profile: dict, path: str | Path | None = None) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path = Path(path) if path else default_path()
    _check(profile, "profile to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(profile, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        raise LtxAneError(f"cannot write backend profile {path}: {err}") from None
    return path


def best_backend(profile: dict | None, component: str, tile) -> str | None:
    """The fastest backend that passed parity for this component at exactly this latent tile, else None."""
    if not profile:
        return None
    tile = _tile(tile)
    passing = [e for e in profile.get("entries", [])
               if e["component"] == component and list(e["tile"]) == tile and e["passed_parity"]]
    return min(passing, key=lambda e: e["median_s"])["backend"] if passing else None


def profile_from_rows(rows: list[dict], machine: dict) -> dict:
    """Reduce benchmark rows (``runner.Row`` dicts) to one entry per (component, tile)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["component"], tuple(r["tile"])), []).append(r)
    entries = []
    for (component, tile), group in groups.items():
        passing = [r for r in group if r.get("passed_parity")]
        pick = min(passing or group, key=lambda r: r["median_s"])
        entry = {"component": component, "tile": list(tile), "backend": pick["backend"],
                 "median_s": pick["median_s"], "passed_parity": bool(pick.get("passed_parity"))}
        if pick.get("package"):  # a kept Core ML package, for readers that load it (backends.py)
            entry["package"] = pick["package"]
        entries.append(entry)
    return {"format": FORMAT, "machine": machine, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "entries": entries}


def merge_profiles(old: dict | None, new: dict) -> dict:
    """New entries replace old ones for the same (component, tile); others are kept if the chip is the same."""
    if not old or old.get("machine", {}).get("chip") != new.get("machine", {}).get("chip"):
        return new
    fresh = {(e["component"], tuple(e["tile"])) for e in new["entries"]}
    kept = [e for e in old["entries"] if (e["component"], tuple(e["tile"])) not in fresh]
    return {**new, "entries": kept + new["entries"]}
