"""A load generator for the concurrency tests: ``python -m audits.ledger.tests.appender WORKER SECONDS [ABORT_EVERY]``.

Appends one entry per transaction, as the system account, until SECONDS have passed; with
ABORT_EVERY, every ABORT_EVERY-th transaction appends its entry and then rolls back (a governed
change that failed after recording). Prints one JSON line with how many it appended, how many it
rolled back, and every error it met.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    worker, seconds = int(sys.argv[1]), float(sys.argv[2])
    abort_every = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from audits.ledger.services import Subject, ledger_append

    actor = get_user_model().objects.get(username="system")
    appended, aborted, errors = 0, 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        abort = abort_every and (appended + aborted + 1) % abort_every == 0
        try:
            with transaction.atomic():
                ledger_append(
                    actor=actor,
                    action="load.aborted" if abort else "load.append",
                    subject=Subject(type="worker", id=str(worker)),
                    payload={"worker": worker, "seq": appended},
                )
                if abort:
                    raise _Abort
            appended += 1
        except _Abort:
            aborted += 1
        except Exception as exc:  # the test counts every kind of failure
            errors.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"worker": worker, "appended": appended, "aborted": aborted, "errors": errors}))


class _Abort(Exception):
    pass


if __name__ == "__main__":
    main()
