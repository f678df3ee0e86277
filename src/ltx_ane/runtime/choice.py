"""Which backends a component runs on: backend names, the ``--backend`` value, and the rule ``auto`` follows.

Backends are named ``mlx``, ``torch`` (the ltx-core reference, on the machine's accelerator when there is one) and
``coreml:<compute unit>``. ``auto`` reads the bench profile (``runtime.profile``): among the entries for the
component and tile that were measured with the run's config, weights and dtype, the fastest that passed parity.
Without such an entry, or off macOS for Core ML, ``auto`` is MLX, and the choice's reason says why. A Core ML model
whose parity gate failed (in the profile, or in its package's fp16 PSNR) is never used.

Nothing here loads a model: the choice is made, and printed, before any backend is built (``runtime.backends``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ltx_ane.errors import LtxAneError
from ltx_ane.models import registry
from ltx_ane.runtime.profile import Profile, default_profile_path

KINDS = ("mlx", "torch", "coreml")
DEFAULT_COMPUTE_UNIT = "CPU_AND_NE"


# ------------------------------------------------------------------------------------------------ names


def canonical(name: str) -> str:
    """'mlx', 'torch', 'coreml' (-> coreml:CPU_AND_NE) or 'coreml:UNIT', checked."""
    from ltx_ane.coreml.runtime import COMPUTE_UNITS

    text = name.strip()
    kind, _, unit = text.partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise LtxAneError(f"unknown backend {text!r} (choose from auto, mlx, torch, coreml[:{'|'.join(COMPUTE_UNITS)}])")
    if kind != "coreml":
        if unit:
            raise LtxAneError(f"backend {text!r}: only coreml takes a compute unit")
        return kind
    unit = (unit or DEFAULT_COMPUTE_UNIT).upper()
    if unit not in COMPUTE_UNITS:
        raise LtxAneError(f"unknown Core ML compute unit {unit!r} in {text!r} (choose from {', '.join(COMPUTE_UNITS)})")
    return f"coreml:{unit}"


def parse_spec(text: str) -> list[str]:
    """A --backend value: 'auto', or one or more backend names separated by commas (no repeats)."""
    parts = [p for p in (text or "").split(",")]
    if any(not p.strip() for p in parts):
        raise LtxAneError(f"empty backend name in {text!r}")
    if [p.strip().lower() for p in parts] == ["auto"]:
        return ["auto"]
    if any(p.strip().lower() == "auto" for p in parts):
        raise LtxAneError(f"'auto' cannot be combined with other backends ({text!r})")
    names = [canonical(p) for p in parts]
    if len(set(names)) != len(names):
        raise LtxAneError(f"backend listed twice in {text!r}")
    return names


# ------------------------------------------------------------------------------------------------ choice


@dataclass
class Choice:
    """Which backends one component runs on, and why (printed for the user)."""

    component: str
    names: list[str]
    reason: str
    package: str | None = None

    def describe(self) -> str:
        return f"{self.component}: {' + '.join(self.names)} ({self.reason})"

    @property
    def explicit(self) -> bool:
        """Asked for by name (not picked by ``auto``)."""
        return not self.reason.startswith("auto")


def choose(
    component: str,
    spec: str,
    tile=None,
    profile: Profile | None = None,
    package: str | None = None,
    platform: str | None = None,
    profile_path: str | Path | None = None,
    identity: Callable[[], dict] | None = None,
) -> Choice:
    """Resolve a --backend value for one component without loading anything.

    Explicit choices that cannot work (Core ML off macOS or without a package, a backend recorded as failing
    parity, several backends for an untiled component) are errors; ``auto`` falls back to MLX and says why.
    ``identity`` gives the run's config hash, weights digest and dtype (``runtime.backends.run_identity``); it is
    called only when the profile has entries to compare with it, and ``auto`` uses none of them without it.
    """
    tiled = registry.spec(component).tiled
    platform = platform or sys.platform
    names = parse_spec(spec)
    if names != ["auto"]:
        if len(names) > 1 and not tiled:
            raise LtxAneError(f"the {registry.spec(component).title} runs on a whole clip, so it takes one backend, "
                              f"not {spec!r}")
        for name in names:
            if profile is not None and profile.failed(component, tile, name):
                raise LtxAneError(f"{name} failed its parity gate for the {component} in {profile.path}; not using it")
            if name.startswith("coreml"):
                if platform != "darwin":
                    raise LtxAneError(f"--backend {name} for the {component}: Core ML runs only on macOS "
                                      f"(this is {platform}); use mlx or auto")
                if not package:
                    raise LtxAneError(f"--backend {name} for the {component} needs its Core ML package: --package FILE")
        return Choice(component, names, "as asked", package)

    where = profile.path if profile is not None else (profile_path or default_profile_path())
    if profile is None:
        return Choice(component, ["mlx"], f"auto: no profile at {where}")
    tile_text = "x".join(map(str, tile)) if tile is not None else "any tile"
    run = identity() if identity is not None and profile.matching(component, tile) else None
    applicable, ignored = profile.applicable(component, tile, run)
    entry = profile.choose(component, tile, run)
    if entry is None:
        failed = [e.backend for e in applicable if not e.passed_parity]
        why = [f"failed parity: {', '.join(failed)}" if failed else "no entry for this run"]
        if ignored:
            why.append(f"ignored {'; '.join(ignored)}; `ltx-ane bench` with this model measures it")
        return Choice(component, ["mlx"], f"auto: profile has no passing backend for {tile_text} ({'; '.join(why)})")
    names, dropped = [], []
    pkg = package or entry.package
    for name in entry.backends:
        if name.startswith("coreml") and platform != "darwin":
            dropped.append(f"{name}: not macOS")
        elif name.startswith("coreml") and not pkg:
            dropped.append(f"{name}: no package")
        elif name == "torch" and not reference_available():
            dropped.append("torch: ltx-core not installed")
        else:
            names.append(name)
    if len(names) > 1 and not tiled:
        names = names[:1]
    if not names:
        return Choice(component, ["mlx"], f"auto: profile picks {entry.backend} for {tile_text}, "
                      f"unusable here ({'; '.join(dropped)})")
    reason = f"auto: fastest passing in profile for {tile_text}"
    if ignored:
        reason += f"; ignored {'; '.join(ignored)}"
    if dropped:
        reason += f"; dropped {'; '.join(dropped)}"
    return Choice(component, names, reason, pkg)


def reference_available() -> bool:
    """Whether torch and ltx-core are installed (checked without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "ltx_core"))
    except (ImportError, ValueError):
        return False
