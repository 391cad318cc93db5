"""Race helper for the tests: run one piece of work in several threads released at the same
instant, each on its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection

from common.errors import DomainError


def run_together(work: Callable[[int], Any], threads: int) -> list[str]:
    """``work(i)`` for ``i`` in ``range(threads)``, all released at once. Returns the outcomes,
    sorted: ``"ok"``, a domain refusal's code, or ``"error: TYPE: message"`` for anything else (a
    lock timeout, an integrity error), which callers' assertions then reject."""
    start = threading.Barrier(threads)
    outcomes: list[str] = []

    def one(i: int) -> None:
        try:
            start.wait()
            work(i)
            outcomes.append("ok")
        except DomainError as exc:
            outcomes.append(exc.code)
        except Exception as exc:
            outcomes.append(f"error: {type(exc).__name__}: {exc}")
        finally:
            connection.close()

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sorted(outcomes)
