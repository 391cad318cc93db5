"""The training process: ``python -m training.entry WORKDIR`` (or under torchrun/accelerate).

Reads ``job.json`` (hyperparameters, device) and ``texts.json`` from WORKDIR, fine-tunes the
model in ``WORKDIR/base`` with ``training.engine`` and writes it to ``WORKDIR/output``. The main
process (rank 0) prints one JSON line per optimizer step and a last ``done`` line; the worker that
started it reads them. No Django here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    workdir = Path(sys.argv[1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from training import engine

    job = json.loads((workdir / "job.json").read_text())
    texts = json.loads((workdir / "texts.json").read_text())
    main_process = os.environ.get("RANK", "0") == "0"

    def on_step(step: int, total: int, metrics: dict[str, float]) -> bool:
        if main_process:
            print(json.dumps({"event": "step", "step": step, "total_steps": total, **metrics}), flush=True)
        return True

    result = engine.train(
        base_folder=workdir / "base", texts=texts, params=engine.Hyperparameters(**job["hyperparameters"]),
        device=job["device"], output_folder=workdir / "output", on_step=on_step,
    )  # fmt: skip
    if main_process:
        done = {"event": "done", "steps": result.steps, "final_loss": result.final_loss,
                "epochs_completed": result.epochs_completed, "seconds": result.seconds}  # fmt: skip
        print(json.dumps(done), flush=True)


if __name__ == "__main__":
    main()
