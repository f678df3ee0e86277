"""A converted package on disk: its user-defined metadata, its size, and clean-up of conversions that were killed.

Reads only the package's small spec file, never the weights; ``META_PREFIX`` and the parity bar are read by the
runtime without coremltools.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ltx_ane import __version__
from ltx_ane.errors import LtxAneError

FORMAT_VERSION = "1"  # bump when the package layout or metadata changes meaning
META_PREFIX = "ltx_ane."
# The conversion gate: a package's fp16 output (and a compressed package's output) against fp32 torch at conversion.
# The runtime uses a package only when it carries that measurement at or above this bar.
PACKAGE_MIN_PSNR_DB = 40.0


def weights_digest(named_arrays) -> str:
    """A digest of a component's weights (ltx-core names and layout) that the converter and the runtime compute
    alike, whatever dtype the runtime loaded: values rounded to bfloat16 (what checkpoints hold, so a bf16 or fp32
    load of them digests the same) and magnitudes below float16's smallest normal taken as zero (an fp16 load
    flushes them)."""
    import numpy as np

    h = hashlib.sha256()
    for name, value in sorted(named_arrays, key=lambda item: item[0]):
        v = np.ascontiguousarray(value, dtype=np.float32)
        v = np.where(np.abs(v) < 2.0**-14, np.float32(0), v).astype(np.float32)
        bits = v.view(np.uint32).astype(np.uint64)
        bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        h.update(f"{name}:{list(v.shape)};".encode())
        h.update(bf16.tobytes())
    return h.hexdigest()[:16]


def _spec_path(package: Path) -> Path:
    from coremltools.libmodelpackage import ModelPackage

    return Path(ModelPackage(str(package)).getRootModel().path())


def read_metadata(package: str | Path) -> dict[str, str]:
    """The package's user-defined metadata (reads only the small spec file, never the weights)."""
    from ltx_ane.coreml.deps import import_coremltools

    ct = import_coremltools()
    package = Path(package)
    if not (package / "Manifest.json").exists():
        raise LtxAneError(f"{package} is not a Core ML package (no Manifest.json)")
    try:
        spec = ct.utils.load_spec(str(package))
    except Exception as e:  # coremltools raises several types for unreadable packages
        raise LtxAneError(f"cannot read {package}: {e}") from None
    return dict(spec.description.metadata.userDefined)


def write_metadata(package: Path, metadata: dict[str, str], description: str) -> None:
    """Set user-defined metadata in place: rewrites the spec file only (save_multifunction drops metadata)."""
    from ltx_ane.coreml.deps import import_coremltools

    ct = import_coremltools()
    spec = ct.utils.load_spec(str(package))
    for key, value in metadata.items():
        spec.description.metadata.userDefined[key] = value
    spec.description.metadata.shortDescription = description
    spec.description.metadata.versionString = __version__
    spec.description.metadata.author = "ltx-ane (weights: Lightricks LTX-2)"
    _spec_path(package).write_bytes(spec.SerializeToString())


def package_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def clean_stale_partials(out_dir: Path) -> None:
    """Remove ``.partial-*`` folders left by conversions that were killed (their process is gone)."""
    for partial in out_dir.glob(".partial-*"):
        try:
            pid = int(partial.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
