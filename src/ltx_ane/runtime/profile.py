"""The backend profile: per component and tile, which backends were measured, how fast, and whether they passed
parity. ``ltx-ane bench`` writes it; ``--backend auto`` reads it. One format, one reader, one writer.

Standard library only, so a reader never pays for MLX, torch or coremltools. Format (JSON, one file per
machine, default ``~/.cache/ltx-ane/profile.json``, or ``$LTX_ANE_CACHE/profile.json``, or ``--profile FILE``)::

    {
      "format": 1,
      "machine": {"chip": "Apple M3 Max", "os": "Darwin 24.1.0", ...},
      "created": "2026-01-01T12:00:00Z",
      "entries": [
        {"component": "decoder",          # a name from models.registry
         "tile": [3, 8, 8],               # latent units [F, h, w] of one call (encoder: its output), or null: any
         "backend": "coreml:CPU_AND_NE",  # mlx | torch | coreml:<compute unit>, or several joined by commas
         "median_s": 0.123,               # "seconds" is accepted too
         "passed_parity": true,
         "package": "/path/decoder.mlpackage"}  # Core ML only, when the bench kept its packages
      ]
    }

A ``backend`` listing several backends means a tiled component runs them together, each pulling the next tile.
The bench writes one entry per (component, tile): the fastest backend whose output passed the parity gate, or,
when none passed, the fastest one with ``passed_parity: false`` (so a reader sees it was measured and rejected).
Other keys are ignored. Among matching entries, the fastest that passed parity wins.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ltx_ane.cache import cache_root
from ltx_ane.errors import LtxAneError

FORMAT = 1


def default_profile_path() -> Path:
    return cache_root() / "profile.json"


@dataclass(frozen=True)
class ProfileEntry:
    component: str
    tile: tuple[int, int, int] | None
    backends: tuple[str, ...]
    passed_parity: bool
    seconds: float | None = None
    package: str | None = None

    @property
    def backend(self) -> str:
        return ",".join(self.backends)

    def to_json(self) -> dict:
        out = {"component": self.component, "tile": list(self.tile) if self.tile is not None else None,
               "backend": self.backend, "median_s": self.seconds, "passed_parity": self.passed_parity}
        if self.package:
            out["package"] = self.package
        return out


@dataclass
class Profile:
    path: Path | None = None
    entries: list[ProfileEntry] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    created: str | None = None

    def matching(self, component: str, tile) -> list[ProfileEntry]:
        tile = tuple(tile) if tile is not None else None
        return [e for e in self.entries if e.component == component and (e.tile is None or e.tile == tile)]

    def choose(self, component: str, tile) -> ProfileEntry | None:
        """The fastest matching entry that passed parity (exact tile before a tile-less entry on a tie)."""
        passed = [e for e in self.matching(component, tile) if e.passed_parity]
        if not passed:
            return None
        return min(passed, key=lambda e: (e.seconds if e.seconds is not None else float("inf"), e.tile is None))

    def failed(self, component: str, tile, backend: str) -> bool:
        """Whether the profile records ``backend`` failing its parity gate for this component and tile."""
        return any(not e.passed_parity and backend in e.backends for e in self.matching(component, tile))

    def to_json(self) -> dict:
        return {"format": FORMAT, "machine": self.machine, "created": self.created,
                "entries": [e.to_json() for e in self.entries]}


def _entry(e, where: str) -> ProfileEntry:
    from ltx_ane.models.registry import NAMES
    from ltx_ane.runtime.backends import parse_spec

    if not isinstance(e, dict):
        raise LtxAneError(f"{where}: not an object")
    component = e.get("component")
    if component not in NAMES:
        raise LtxAneError(f"{where}: component {component!r} is not one of {', '.join(NAMES)}")
    tile = e.get("tile")
    if tile is not None:
        if not (isinstance(tile, (list, tuple)) and len(tile) == 3 and all(isinstance(v, int) and v > 0 for v in tile)):
            raise LtxAneError(f"{where}: tile must be [frames, h, w] in latents or null, got {tile!r}")
        tile = tuple(tile)
    if not isinstance(e.get("backend"), str):
        raise LtxAneError(f"{where}: 'backend' must be a string such as 'mlx' or 'coreml:CPU_AND_NE'")
    try:
        backends = parse_spec(e["backend"])
    except LtxAneError as err:
        raise LtxAneError(f"{where}: {err}") from None
    if backends == ["auto"]:
        raise LtxAneError(f"{where}: 'auto' is not a measured backend")
    seconds = e.get("median_s", e.get("seconds"))
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))):
        raise LtxAneError(f"{where}: 'median_s' must be a number")
    return ProfileEntry(component, tile, tuple(backends), e.get("passed_parity") is True,
                        None if seconds is None else float(seconds), e.get("package"))


def parse_profile(raw, path: Path | None) -> Profile:
    where = f"profile {path}" if path is not None else "profile"
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise LtxAneError(f"{where}: expected a JSON object with a list under 'entries'")
    entries = [_entry(e, f"{where}, entry {i}") for i, e in enumerate(raw["entries"])]
    machine = raw.get("machine") if isinstance(raw.get("machine"), dict) else {}
    return Profile(path, entries, machine, raw.get("created"))


def load_profile(path: str | Path | None = None, must_exist: bool | None = None) -> Profile | None:
    """The profile at ``path`` or at the default location; None when there is none. A missing file is an error
    when ``must_exist`` (by default: when a path was given)."""
    if must_exist is None:
        must_exist = path is not None
    path = Path(path).expanduser() if path is not None else default_profile_path()
    if not path.exists():
        if must_exist:
            raise LtxAneError(f"profile {path} does not exist")
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LtxAneError(f"cannot read profile {path}: {e}") from None
    return parse_profile(raw, path)


def write_profile(profile: Profile, path: str | Path | None = None) -> Path:
    """Write atomically (a reader never sees half a file; a failed write leaves no temporary file)."""
    from ltx_ane.io.latents import atomic_output

    path = Path(path).expanduser() if path is not None else default_profile_path()
    text = json.dumps(profile.to_json(), indent=1) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:  # a failed write leaves neither a half file nor its temporary one
            tmp.write_text(text)
    except OSError as err:
        raise LtxAneError(f"cannot write backend profile {path}: {err}") from None
    profile.path = path
    return path


def profile_from_rows(rows: list[dict], machine: dict) -> Profile:
    """Reduce benchmark rows (``bench.runner`` row dicts) to one entry per (component, tile)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["component"], tuple(r["tile"])), []).append(r)
    entries = []
    for (component, tile), group in groups.items():
        passing = [r for r in group if r.get("passed_parity")]
        pick = min(passing or group, key=lambda r: r["median_s"])
        entries.append(ProfileEntry(component, tile, (pick["backend"],), bool(pick.get("passed_parity")),
                                    float(pick["median_s"]), pick.get("package")))
    return Profile(None, entries, machine, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def merge_profiles(old: Profile | None, new: Profile) -> Profile:
    """New entries replace old ones for the same (component, tile); others are kept if the chip is the same."""
    if old is None or old.machine.get("chip") != new.machine.get("chip"):
        return new
    fresh = {(e.component, e.tile) for e in new.entries}
    kept = [e for e in old.entries if (e.component, e.tile) not in fresh]
    return Profile(new.path, kept + new.entries, new.machine, new.created)
