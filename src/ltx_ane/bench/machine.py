"""What machine a benchmark ran on: chip, OS, memory, library versions, load; and the chips' peak rates.

The peak table is for the on-paper column only (time at the chip's peak). Apple figures are public ones, as
collected in the project's reference notes (section 4); NVIDIA figures are the datasheets' dense bf16 rates.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

# chip name prefix -> peak rates in TFLOP/s (ANE: fp16 TOPS). None where no public figure was found.
# Matching takes the longest prefix, so "Apple M3 Max" wins over "Apple M3".
CHIPS: dict[str, dict] = {
    "Apple M1": {"ane_tflops": 11.0, "gpu_tflops": 2.6},
    "Apple M1 Max": {"ane_tflops": 11.0, "gpu_tflops": 10.4},
    "Apple M2": {"ane_tflops": 15.8, "gpu_tflops": None},
    "Apple M2 Max": {"ane_tflops": 15.8, "gpu_tflops": 13.6},
    "Apple M3": {"ane_tflops": 18.0, "gpu_tflops": None},
    "Apple M3 Max": {"ane_tflops": 18.0, "gpu_tflops": 15.0},
    # Apple quotes 38 TOPS for the M4's ANE, probably an int8 figure; fp16 is likely about half.
    "Apple M4": {"ane_tflops": 19.0, "gpu_tflops": 4.3},
    "Apple M4 Max": {"ane_tflops": 19.0, "gpu_tflops": 17.0},
    "NVIDIA H100": {"ane_tflops": None, "gpu_tflops": 989.0},
    "NVIDIA H200": {"ane_tflops": None, "gpu_tflops": 989.0},
}


def chip_peaks(chip: str | None) -> dict:
    """The peak-rate row for a chip name (longest matching prefix), or an empty row."""
    best = None
    for name in CHIPS:
        if chip and chip.startswith(name) and (best is None or len(name) > len(best)):
            best = name
    if best is None:
        return {"table_chip": None, "ane_tflops": None, "gpu_tflops": None}
    return {"table_chip": best, **CHIPS[best]}


def _sysctl(key: str) -> str | None:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    if sys.platform == "darwin":
        return _sysctl("machdep.cpu.brand_string") or platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    if sys.platform == "darwin":
        value = _sysctl("hw.memsize")
        return int(value) if value and value.isdigit() else None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gpu_name() -> str | None:
    """The CUDA device's name, if torch is importable and sees one (never imports torch just to fail)."""
    if "torch" not in sys.modules:
        try:
            import torch  # noqa: F401
        except ImportError:
            return None
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for dist in ("ltx-ane", "mlx", "torch", "ltx-core", "coremltools", "numpy", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def load() -> dict:
    """Load average now, against the CPU count: a benchmark started on a busy machine must say so."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return {"load1": None, "load5": None, "cpus": os.cpu_count(), "busy": None}
    cpus = os.cpu_count() or 1
    return {"load1": round(one, 2), "load5": round(five, 2), "cpus": cpus, "busy": one > 0.5 * cpus}


def machine_info() -> dict:
    cpu = _cpu_name()
    gpu = _gpu_name()
    # The chip whose peaks matter: the Apple SoC on a Mac, the CUDA GPU where there is one, else the CPU.
    chip = cpu if sys.platform == "darwin" else (gpu or cpu)
    return {
        "chip": chip,
        "cpu": cpu,
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "memory_bytes": _memory_bytes(),
        "cpus": os.cpu_count(),
        "peaks": chip_peaks(chip),
    }
