"""Benchmarks whose figures go in the README (with the machine they ran on)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """Host, architecture, CPU model and count: what a figure was measured on. The CPU model
    matters here: on the same 2-core machine type (an AMD EPYC on 2026-12-01), the evaluation
    ran at about half the speed an earlier session measured (its CPU was not recorded)."""
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()} {platform.machine()} {model} x{os.cpu_count()}".strip()
