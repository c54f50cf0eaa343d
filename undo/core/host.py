"""Which machine made a number: every artifact records its host (`HostRecord`), because float kernels differ across
CPUs (and GPUs), so the same seed gives slightly different numbers on another machine. The report lists a study's
hosts and flags a study whose artifacts come from several, so that a host difference is not read as a regression."""

from __future__ import annotations

import functools
import os
import platform
import re
import sys

from undo.schema.results import HostRecord


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def _build() -> dict[str, str | None]:
    """What torch was built with: its BLAS library, its oneDNN version and the CPU instructions it uses."""
    import torch

    shown = torch.__config__.show()

    def find(pattern: str) -> str | None:
        match = re.search(pattern, shown)
        return match.group(1) if match else None

    return {"blas": find(r"BLAS_INFO=(\w+)"), "onednn": find(r"(?:MKL-DNN|oneDNN) v([\w.]+)"),
            "cpu_capability": find(r"CPU capability usage: (\w+)")}


def host_record() -> HostRecord:
    """This process's host: CPU model and cores, torch and its BLAS/oneDNN builds, threads, the device it computes
    on."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return HostRecord(cpu=_cpu_model(), cores=os.cpu_count(), machine=platform.machine(), torch=torch.__version__,
                      threads=torch.get_num_threads(), device=device, python=platform.python_version(),
                      os=sys.platform, **_build())
