"""The backend profile: per component and tile, which backends were measured, how fast, and whether they passed
parity. ``ltx-ane bench`` writes it; ``--backend auto`` reads it. One format, one reader, one writer.

Standard library only, so a reader never pays for MLX, torch or coremltools. Format (JSON, one file per
machine, default ``~/.cache/ltx-ane/profile.json``, or ``$LTX_ANE_CACHE/profile.json``, or ``--profile FILE``)::

    {
      "format": 2,
      "machine": {"chip": "Apple M3 Max", "os": "Darwin 24.1.0", ...},
      "created": "2026-01-01T12:00:00Z",
      "entries": [
        {"component": "decoder",          # a name from models.registry
         "tile": [3, 8, 8],               # latent units [F, h, w] of one call (encoder: its output), or null: any
         "backend": "coreml:CPU_AND_NE",  # mlx | torch | coreml:<compute unit>, or several joined by commas
         "median_s": 0.123,               # "seconds" is accepted too
         "passed_parity": true,
         "measured_with": {"config_hash": "3f2a...", "weights_digest": "9c1e...", "dtype": "bf16"},
         "package": "/path/decoder.mlpackage"}  # Core ML only, when the bench kept its packages
      ]
    }

``measured_with`` is what the entry was measured with: the component's config (its widths) and weights, as
``runtime.backends.model_identity`` digests them, and the MLX dtype of the run. Parity and speed hold for those
only (a package that passes on random weights may overflow fp16 on real ones), so ``auto`` uses an entry only when
all three equal the run's; an entry without them (written before they were recorded) is never used.

A ``backend`` listing several backends means a tiled component runs them together, each pulling the next tile.
The bench writes one entry per (component, tile): the fastest backend whose output passed the parity gate, or,
when none passed, the fastest one with ``passed_parity: false`` (so a reader sees it was measured and rejected).
Other keys are ignored. Among the entries that apply to a run, the fastest that passed parity wins.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ltx_ane.cache import cache_root
from ltx_ane.errors import LtxAneError

FORMAT = 2
# What an entry must share with a run to apply to it (see the module doc).
IDENTITY_KEYS = ("config_hash", "weights_digest", "dtype")


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
    measured_with: dict | None = None  # IDENTITY_KEYS -> str; None in profiles written before they were recorded

    @property
    def backend(self) -> str:
        return ",".join(self.backends)

    def mismatch(self, identity: dict | None) -> str | None:
        """Why this entry does not apply to a run of ``identity`` (IDENTITY_KEYS -> str; None: not known), or None
        when it does."""
        if identity is None:
            return f"{self.backend}: the run's config, weights and dtype are not known"
        if self.measured_with is None:
            return f"{self.backend}: no record of the weights, config and dtype it was measured with"
        differ = [key for key in IDENTITY_KEYS if self.measured_with.get(key) != identity.get(key)]
        if not differ:
            return None
        what = {"config_hash": "another config", "weights_digest": "other weights",
                "dtype": f"dtype {self.measured_with.get('dtype')}, not {identity.get('dtype')}"}
        return f"{self.backend}: measured with {', '.join(what[key] for key in differ)}"

    def to_json(self) -> dict:
        out = {"component": self.component, "tile": list(self.tile) if self.tile is not None else None,
               "backend": self.backend, "median_s": self.seconds, "passed_parity": self.passed_parity}
        if self.measured_with is not None:
            out["measured_with"] = dict(self.measured_with)
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

    def applicable(self, component: str, tile, identity: dict | None) -> tuple[list[ProfileEntry], list[str]]:
        """The entries for this component and tile that were measured with the run's ``identity``, and one line
        for each other one saying why it does not apply."""
        used, ignored = [], []
        for e in self.matching(component, tile):
            why = e.mismatch(identity)
            if why is None:
                used.append(e)
            else:
                ignored.append(why)
        return used, ignored

    def choose(self, component: str, tile, identity: dict | None) -> ProfileEntry | None:
        """The fastest applicable entry that passed parity (exact tile before a tile-less entry on a tie)."""
        passed = [e for e in self.applicable(component, tile, identity)[0] if e.passed_parity]
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
    from ltx_ane.runtime.choice import parse_spec

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
    measured_with = e.get("measured_with")
    if measured_with is not None and not (isinstance(measured_with, dict) and set(measured_with) == set(IDENTITY_KEYS)
                                          and all(isinstance(v, str) for v in measured_with.values())):
        raise LtxAneError(f"{where}: 'measured_with' must map {', '.join(IDENTITY_KEYS)} to strings")
    return ProfileEntry(component, tile, tuple(backends), e.get("passed_parity") is True,
                        None if seconds is None else float(seconds), e.get("package"), measured_with)


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


def _identity_key(measured_with: dict | None) -> tuple | None:
    return None if measured_with is None else tuple(measured_with.get(k) for k in IDENTITY_KEYS)


def profile_from_rows(rows: list[dict], machine: dict) -> Profile:
    """Reduce benchmark rows (``bench.runner`` row dicts, with their ``measured_with``) to one entry per
    (component, tile, what it was measured with)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["component"], tuple(r["tile"]), _identity_key(r.get("measured_with"))), []).append(r)
    entries = []
    for (component, tile, _), group in groups.items():
        passing = [r for r in group if r.get("passed_parity")]
        pick = min(passing or group, key=lambda r: r["median_s"])
        entries.append(ProfileEntry(component, tile, (pick["backend"],), bool(pick.get("passed_parity")),
                                    float(pick["median_s"]), pick.get("package"), pick.get("measured_with")))
    return Profile(None, entries, machine, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def merge_profiles(old: Profile | None, new: Profile) -> Profile:
    """New entries replace old ones for the same (component, tile, measured_with); others are kept if the chip is
    the same, except entries without ``measured_with``, which ``auto`` can never use."""
    if old is None or old.machine.get("chip") != new.machine.get("chip"):
        return new
    key = lambda e: (e.component, e.tile, _identity_key(e.measured_with))  # noqa: E731
    fresh = {key(e) for e in new.entries}
    kept = [e for e in old.entries if e.measured_with is not None and key(e) not in fresh]
    return Profile(new.path, kept + new.entries, new.machine, new.created)
