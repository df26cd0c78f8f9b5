"""What every benchmark prints beside its figures: the machine and the commit it measured."""

from __future__ import annotations

import os
import platform
import subprocess

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def machine() -> str:
    """CPU model, logical CPUs, torch version and threads, and the load at start (a shared machine)."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, 1-min load average at start {load:.1f}"
    )


def git_commit(*paths: str) -> str:
    """Short HEAD sha, flagged when any of ``paths`` (the code measured) has uncommitted changes."""
    try:
        git = ["git", "-C", ROOT]
        sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = ""
        if paths:
            status = [*git, "status", "--porcelain", "--", *paths]
            dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
        return sha.stdout.strip() + (" (+ local changes to the measured code)" if dirty else "")
    except OSError:
        return "unknown"
