"""The environment fingerprint stored with every measurement: what a latency depends on
besides the model (hardware, load, library versions, the profile and the protocol)."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

import numpy as np

from nas.devices import DeviceProfile
from nas.measure._timing import PROTOCOL_VERSION, TimingConfig

__all__ = ["environment_fingerprint"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_fingerprint(
    profile: DeviceProfile, config: TimingConfig | None = None
) -> dict[str, Any]:
    """What a latency depends on besides the model: hardware, software, settings."""
    import onnxruntime as ort

    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = []
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {
        "protocol": PROTOCOL_VERSION,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "loadavg": load,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "profile": profile.to_dict(),
        "threads": {"intra_op": profile.intra_op_threads, "inter_op": profile.inter_op_threads,
                    "allow_spinning": profile.allow_spinning},
        "timing": (config or TimingConfig()).to_dict(),
    }
