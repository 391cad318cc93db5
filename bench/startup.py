"""python -m bench.startup: how long the web side takes to start.

Measures ``python manage.py check`` end to end (process start included) and, in a fresh process,
``django.setup()`` plus loading the URL conf, and lists any heavy library that start-up imported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
HEAVY = ["presidio_analyzer", "spacy", "torch", "transformers", "mlflow", "garak"]
PROBE = f"""
import json, sys, time
t = time.perf_counter()
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns
print(json.dumps({{"seconds": time.perf_counter() - t, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gov-bench-") as var_dir:
        env = dict(os.environ, GOV_VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="config.settings")
        subprocess.run(
            [sys.executable, "manage.py", "ledger", "keygen"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, check=True, capture_output=True)
        check_times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, check=True, capture_output=True)
            check_times.append(time.perf_counter() - started)
        probes = [
            json.loads(
                subprocess.run(
                    [sys.executable, "-c", PROBE], cwd=ROOT, env=env, check=True, capture_output=True, text=True
                ).stdout
            )
            for _ in range(RUNS)
        ]
    print(
        json.dumps(
            {
                "manage_py_check_s_median": round(statistics.median(check_times), 3),
                "manage_py_check_s_max": round(max(check_times), 3),
                "django_setup_and_urlconf_s_median": round(statistics.median(p["seconds"] for p in probes), 3),
                "heavy_modules_imported_at_start_up": sorted({m for p in probes for m in p["heavy"]}),
                "runs": RUNS,
            }
        )
    )


if __name__ == "__main__":
    main()
