"""The workers' training folders (``TRAINING_WORK_ROOT``, local disk): where an attempt works, and
the scrubbing of what it leaves behind."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from training.models import TERMINAL_STATES, FineTuneRun, OptimisationRun, RunState

logger = logging.getLogger(__name__)


_WORKDIR_NAME = re.compile(r"^run-([0-9]+)-([0-9]+)$")
_OPTIMISATION_WORKDIR_NAME = re.compile(r"^optimise-([0-9]+)-([0-9]+)$")


def _workdir(run_id: int, attempt: int) -> Path:
    return Path(settings.TRAINING_WORK_ROOT) / f"run-{run_id}-{attempt}"


def fine_tune_workdirs_sweep() -> int:
    """Scrub the working folders that no live attempt owns: a worker killed outright runs no
    ``finally``, and its attempt's folder keeps the training records (``texts.json``), the base
    weights and the unregistered output. Runs on each worker host (at worker start and with the
    reaper): ``TRAINING_WORK_ROOT`` is local disk. A folder is left alone while its attempt is the
    run's current one and still running; the registered output of a succeeded attempt stays.
    Optimisation runs' folders (``optimise-<run>-<attempt>``) are scrubbed alike
    (``_optimisation_workdirs_sweep``). Returns how many folders were scrubbed."""
    root = Path(settings.TRAINING_WORK_ROOT)
    if not root.is_dir():
        return 0
    scrubbed = _optimisation_workdirs_sweep(root)
    for folder, keep_output in _stopped_attempts(root, _WORKDIR_NAME, FineTuneRun):
        leftovers = [folder / "texts.json", folder / "base", *folder.glob(".output-*")]
        if not keep_output:
            leftovers.append(folder / "output")
        if not any(path.exists() for path in leftovers):
            continue
        _workdir_scrub(folder, keep_output=keep_output)
        logger.warning("training folder %s: scrubbed what its stopped attempt left behind", folder)
        scrubbed += 1
    return scrubbed


def _stopped_attempts(root: Path, name: re.Pattern[str], model: Any) -> Iterator[tuple[Path, bool]]:
    """The folders under ``root`` named ``name`` (``<prefix>-<run>-<attempt>``) that no live attempt
    owns (not the run's current attempt, or that attempt has ended), in order, each with whether
    its registered output stays (the current attempt succeeded)."""
    found = {}
    for folder in root.iterdir():
        match = name.match(folder.name)
        if match and folder.is_dir():
            found[folder] = (int(match[1]), int(match[2]))
    runs = model.objects.in_bulk({run_id for run_id, _ in found.values()})
    for folder, (run_id, attempt) in sorted(found.items()):
        run = runs.get(run_id)
        current = run is not None and run.attempt == attempt
        if not (current and run.state not in TERMINAL_STATES):
            yield folder, current and run.state == RunState.SUCCEEDED


def _optimisation_workdirs_sweep(root: Path) -> int:
    """The same for optimisation runs, whose worker (killed outright) leaves ``source`` (a copy of
    the source weights, trained on personal data perhaps since erased), ``fp32`` (its export) and an
    unregistered ``int8``; a succeeded current attempt keeps ``int8``, its version's ``source``."""
    scrubbed = 0
    for folder, keep_int8 in _stopped_attempts(root, _OPTIMISATION_WORKDIR_NAME, OptimisationRun):
        leftovers = [folder / name for name in ("source", "fp32", *(() if keep_int8 else ("int8",)))]
        if not any(path.exists() for path in leftovers):
            continue
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        logger.warning("optimisation folder %s: scrubbed what its stopped attempt left behind", folder)
        scrubbed += 1
    return scrubbed


def _workdir_scrub(workdir: Path, *, keep_output: bool) -> None:
    """Delete the run's working copies of its inputs, whatever the outcome: ``texts.json`` holds
    the full training records (personal data included), which an Art. 17 erasure of the dataset
    version could never reach here; ``base/`` stays in the artifact store. Output that was not
    registered (the run failed or was cancelled) goes too: weights trained on data that may since
    have been erased. The registered output stays (it is the model version's ``source``), and so
    do ``job.json`` (hyperparameters) and ``train.log`` (the child's stderr) for diagnosis. A
    worker killed outright runs no ``finally``: ``fine_tune_workdirs_sweep`` scrubs its folder."""
    (workdir / "texts.json").unlink(missing_ok=True)
    shutil.rmtree(workdir / "base", ignore_errors=True)
    for staging in workdir.glob(".output-*"):  # the engine's staging folder, left by a killed process
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_output:
        shutil.rmtree(workdir / "output", ignore_errors=True)
