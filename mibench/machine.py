"""Facts about the machine a run ran on: devices, cores, CPU model, package versions."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

#: Packages whose versions every manifest states (when installed).
CORE_PACKAGES = ("mibench", "torch", "numpy", "scipy", "scikit-image", "pandas", "pluggy")
#: The toolboxes some methods call: stated when installed, as their results depend on them.
TOOLBOX_PACKAGES = ("SimpleITK", "itk", "itk-elastix")


def device_info(device_name: str) -> dict[str, Any]:
    """``type``, ``torch_device`` and ``name`` (GPU or CPU model) of a device request, here.

    Raises :class:`mibench.errors.UserError` when the device does not exist on this machine.
    """
    import torch

    from mibench.tensors import resolve_device

    device = resolve_device(device_name)
    info: dict[str, Any] = {"type": device.type, "torch_device": str(device)}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["torch_device"] = f"cuda:{index}"
        info["name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = cpu_model()
    return info


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: a SLURM job's share, say)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """Host name, platform, core count and CPU model, as ``run.json`` records them."""
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "processor": cpu_model()}


def source_commit() -> str | None:
    """The git commit mibench runs from, when it runs from a checkout (an editable install),
    with ``+dirty`` when the checkout has uncommitted changes; None otherwise."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def versions() -> dict[str, str]:
    """Python's and the relevant packages' versions: mibench's core dependencies, the toolboxes
    when installed, every installed mibench plugin package, and mibench's commit when it runs
    from a checkout (``mibench-commit``)."""
    out = {"python": platform.python_version()}
    for name in (*CORE_PACKAGES, *TOOLBOX_PACKAGES):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    for dist in md.distributions():
        if any(ep.group == "mibench" for ep in dist.entry_points):
            out[dist.metadata["Name"]] = dist.version
    commit = source_commit()
    if commit:
        out["mibench-commit"] = commit
    return out
