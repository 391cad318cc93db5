"""The integrator killed at every step: ``python -m audits.ledger.tests.integrator_crash``.

Run against a fresh, migrated PostgreSQL database (``DATABASE_URL``) with deferred sequencing.
Records 60 entries in several transactions, one more transaction that records an entry and rolls
back (a hole the integrator must fill with a void entry), and 20 after it. Then, for k = 1, 2, ...
a forked child runs one integration and is killed (``os._exit``) just before its k-th database
statement, or just before its commit once k passes the last statement; after each kill the parent
checks the stored tree: either untouched or fully integrated, the head's right edge equal to the
one rebuilt from the entries' own bytes, at most one void entry. The first child that runs to the
end finishes the job. Prints one JSON object: the steps killed and the final state.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


class _Abort(Exception):
    pass


def _integrate_killed_at(k: int) -> None:
    """One integration, the process killed just before its k-th statement, or just before its
    commit when k is one past its last statement; exits 0 if it ran to the end."""
    from django.db import connection

    from audits.ledger import integrator

    seen = 0

    def kill_at_k(execute, sql, params, many, context):
        nonlocal seen
        seen += 1
        if seen == k:
            os._exit(9)
        return execute(sql, params, many, context)

    connection.ensure_connection()
    commit = connection._commit
    connection._commit = lambda: os._exit(9) if seen + 1 == k else commit()
    with connection.execute_wrapper(kill_at_k):
        integrator.integrate()
    os._exit(0)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from audits.ledger import merkle
    from audits.ledger.selectors import head_tree
    from audits.ledger.services import VOID_ACTION, Subject, ledger_append

    actor = get_user_model().objects.get(username="system")

    def record(n: int, start: int) -> None:
        with transaction.atomic():
            for i in range(start, start + n):
                ledger_append(actor=actor, action="crash.append", subject=Subject("thing", str(i)), payload={"i": i})

    for start in range(0, 60, 15):
        record(15, start)
    try:
        with transaction.atomic():
            ledger_append(actor=actor, action="crash.aborted", subject=Subject("thing", "x"), payload={})
            raise _Abort
    except _Abort:
        pass
    record(20, 60)

    def stored_state() -> dict[str, object]:
        with connection.cursor() as cursor:
            cursor.execute('SELECT "index", body, leaf_hash, action FROM ledger_entry ORDER BY "index"')
            rows = cursor.fetchall()
        head = head_tree()
        rebuilt = merkle.CompactRange()
        for index, body, leaf, _action in rows[: head.size]:
            assert index == rebuilt.size, f"entry {index} where {rebuilt.size} was due"
            assert hashlib.sha256(b"\x00" + bytes(body)).digest() == bytes(leaf), f"entry {index} changed"
            rebuilt.append(bytes(leaf))
        return {
            "head": head.size,
            "head_matches_entries": head.encode() == rebuilt.encode(),
            "entries": len(rows),
            "voids": sum(1 for row in rows if row[3] == VOID_ACTION),
            "indexes": [row[0] for row in rows],
        }

    before = stored_state()
    killed, states = 0, []
    for k in range(1, 1000):
        connection.close()  # the child opens its own connection
        pid = os.fork()
        if pid == 0:  # the child: one integration, killed before statement k (or before its commit)
            _integrate_killed_at(k)
        _, status = os.waitpid(pid, 0)
        state = stored_state()
        states.append({key: state[key] for key in ("head", "head_matches_entries", "voids")})
        if os.waitstatus_to_exitcode(status) == 0:
            break
        killed += 1
        assert state["head"] == 0, f"a killed integration left the head at {state['head']}"
    after = stored_state()
    print(
        json.dumps(
            {
                "recorded_before": before["entries"],
                "killed_steps": killed,
                "states_after_kills": states[:-1],
                "final": {key: after[key] for key in ("head", "head_matches_entries", "entries", "voids")},
                "final_indexes_contiguous": after["indexes"] == list(range(len(after["indexes"]))),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
