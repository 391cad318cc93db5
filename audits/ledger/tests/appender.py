"""A load generator for the concurrency test: ``python -m audits.ledger.tests.appender WORKER SECONDS``.

Appends one entry per transaction, as the system account, until SECONDS have passed; prints one
JSON line with how many it appended and every error it met.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    worker, seconds = int(sys.argv[1]), float(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from audits.ledger.services import Subject, ledger_append

    actor = get_user_model().objects.get(username="system")
    appended, errors = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ledger_append(
                actor=actor,
                action="load.append",
                subject=Subject(type="worker", id=str(worker)),
                payload={"worker": worker, "seq": appended},
            )
            appended += 1
        except Exception as exc:  # the test counts every kind of failure
            errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"worker": worker, "appended": appended, "errors": errors}))


if __name__ == "__main__":
    main()
