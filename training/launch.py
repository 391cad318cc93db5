"""The command that trains a run's working folder: ``python -m training.entry WORKDIR`` for one
device, and through torchrun or accelerate (``TRAINING_LAUNCHER``) when a run asks for several
GPUs. Data-parallel training is the Trainer's own under those launchers; there is no distributed
code of ours."""

from __future__ import annotations

import sys
from pathlib import Path


def launch_command(
    *, workdir: Path, gpu_count: int, launcher: str | None = None, python: str | None = None
) -> list[str]:
    if launcher is None:
        from django.conf import settings

        launcher = settings.TRAINING_LAUNCHER
    python = python or sys.executable
    entry = ["-m", "training.entry", str(workdir)]
    if gpu_count <= 1:
        return [python, *entry]
    if launcher == "torchrun":
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpu_count}", *entry]
    if launcher == "accelerate":
        return [python, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={gpu_count}", *entry]
    raise ValueError(f"unknown launcher {launcher!r}: torchrun or accelerate")
