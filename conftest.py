"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def ledger_signing_key() -> Path:
    """Every test session has a signing key in its temporary var/, as `make up` would."""
    from django.conf import settings

    from audits.ledger.keys import SignerKey, write_signer_keys

    path: Path = settings.LEDGER_SIGNING_KEY_FILE
    if not path.exists():
        write_signer_keys(path, [SignerKey.generate(settings.LEDGER_ORIGIN)])
    return path


SCALE_VARIABLES = ("DATABASE_URL", "DATABASE_URL_FILE", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
OWN_SERVICE = (
    "own_service: the test builds a whole service of its own on the embedded default (a fresh var/, "
    "SQLite, the embedded broker) whatever the pass, so it runs in the embedded pass only: in scale mode it "
    "would run the very same thing again"
)


PURE = (
    "pure: the test's module uses none of what the passes differ in (the database, the broker, the cache), "
    "so it runs in one pass only (PURE_TESTS_PASS, by default the embedded one): the other would run the same "
    "code again"
)
SINGLE_WALK = (
    "one_pass(name): a browser walk, whose screens are the same over both databases (what differs "
    "under them, the queries and the locks, the admin pages matrix and the service tests run in both "
    "passes): where make test runs the two passes side by side (PASSES_SIDE_BY_SIDE=1, set by "
    "bin/test-both), only the named pass, embedded or scale, runs it; a pass run alone runs every walk"
)
# What a test that uses the database asks for; a test marked pure asking for one is a mistake.
DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", OWN_SERVICE)
    config.addinivalue_line("markers", PURE)
    config.addinivalue_line("markers", SINGLE_WALK)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In scale mode (``DATABASE_URL`` set), skip the tests marked ``own_service`` and those that use
    ``fresh_env``; skip the tests marked ``pure`` in the pass that ``PURE_TESTS_PASS`` does not name
    (by default the scale pass): what they run does not depend on the pass; and, where both passes
    run side by side, the browser walks marked ``one_pass`` in the pass they do not name. A test
    marked ``pure`` that asks for the database is refused in both passes (in the embedded pass,
    pytest-django also refuses any database access of a test not marked ``django_db``)."""
    for item in items:
        if item.get_closest_marker("pure") and (
            item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            raise pytest.UsageError(f"{item.nodeid} is marked pure but uses the database")
    # Which pass runs the pure tests: the embedded one, unless ``PURE_TESTS_PASS=scale`` (set by
    # bin/test-both, where the scale pass is otherwise the shorter of the two side by side).
    pure_pass = os.environ.get("PURE_TESTS_PASS", "embedded")
    if pure_pass not in ("embedded", "scale"):
        raise pytest.UsageError(f"PURE_TESTS_PASS is {pure_pass!r}; expected embedded or scale")
    running = "scale" if os.environ.get("DATABASE_URL") else "embedded"
    pure = pytest.mark.skip(
        reason=f"pure: uses neither the database, the broker nor the cache; the {pure_pass} pass runs it"
    )
    own = pytest.mark.skip(reason="builds its own embedded-default service: the embedded pass runs it")
    split_walks = os.environ.get("PASSES_SIDE_BY_SIDE") == "1"
    for item in items:
        one_pass = item.get_closest_marker("one_pass")
        if one_pass is not None:
            named = one_pass.args[0] if one_pass.args else None
            if named not in ("embedded", "scale"):
                raise pytest.UsageError(f"{item.nodeid}: one_pass names {named!r}; expected embedded or scale")
            if split_walks and running != named:
                item.add_marker(pytest.mark.skip(reason=f"a browser walk: the {named} pass beside this one runs it"))
        if item.get_closest_marker("pure"):
            if running != pure_pass:
                item.add_marker(pure)
        elif running == "scale" and (
            item.get_closest_marker("own_service") or "fresh_env" in getattr(item, "fixturenames", ())
        ):
            item.add_marker(own)


def require_tool(present: bool, what: str) -> None:
    """Skip a test whose system tool is missing, saying which; under ``make test``
    (``GOV_TESTS_REQUIRE_TOOLS=1``, set by bin/test-both after it has installed every tool) a
    missing tool fails the test instead, so the full run never passes by skipping."""
    if present:
        return
    if os.environ.get("GOV_TESTS_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{what} is missing, and make test installs it (bin/system-packages)", pytrace=False)
    pytest.skip(f"{what} is missing (make test installs it: bin/system-packages)")


def subprocess_env(*, embedded: bool = False, **overrides: str) -> dict[str, str]:
    """The environment for a process a test starts. ``embedded`` drops the scale-mode variables,
    for tests that build a whole service of their own in a fresh var/ (SQLite, embedded broker)."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    if embedded:
        for name in SCALE_VARIABLES:
            env.pop(name, None)
    env.update(overrides)
    return env


def manage_in(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` in a child process with ``env``."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh embedded-default service in ``tmp_path``: keys made, migrated."""
    env = subprocess_env(
        embedded=True, GOV_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", LOG_LEVEL="WARNING"
    )
    for args in (("ledger", "keygen"), ("migrate", "--noinput")):
        result = manage_in(env, *args)
        assert result.returncode == 0, result.stderr
    return env


def _test_database_url() -> str:
    """The URL of the test database pytest-django made, for processes the tests start."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = f"{quote(db['USER'])}:{quote(db['PASSWORD'])}@" if db["USER"] else ""
    return f"postgres://{credentials}{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_celery_worker(queues: str = "default,cpu", *, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
    """A real Celery worker in its own process (prefork, one child), on the real broker and the
    test database, answering a ping before this returns (unless ``wait`` is false). Its log is
    next to the test's var/."""
    from config.celery import declare_queues, ping

    declare_queues(*queues.split(","))  # before any worker: two creating one queue at once lose one
    log = Path(os.environ["GOV_VAR_DIR"]) / f"worker-{uuid.uuid4().hex[:8]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config.celery", "worker", "--loglevel", "INFO",
             "--pool", "prefork", "--concurrency", "1", "--queues", queues,
             "--hostname", f"test-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT,
            # The runtime guard of test deployments uses pattern recognizers only (no spaCy pipeline).
            env=subprocess_env(DATABASE_URL=_test_database_url(), SERVING_GUARD_NLP_MODEL="blank", **env),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if not wait:
        return proc
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the Celery worker exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                ping.apply_async(args=["ready"], queue=queues.split(",")[0]).get(timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Celery worker did not answer within 90 s:\n{log.read_text()[-4000:]}"
                    ) from None
    except BaseException:
        stop_celery_worker(proc)
        raise
    return proc


def stop_celery_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup: None) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker in its own process, on the real broker and the test database. Not
    eager mode. Tests that need the worker to see their rows use
    ``django_db(transaction=True, serialized_rollback=True)`` (the flush after them also removes
    the rows migrations made, which the serialized copy restores)."""
    proc = start_celery_worker()
    try:
        yield proc
    finally:
        stop_celery_worker(proc)


@pytest.fixture(autouse=True)
def _private_checkpoint_log(settings: object, tmp_path: Path) -> None:
    """Each test gets its own checkpoint log: database rows roll back between tests, files do not."""
    settings.LEDGER_CHECKPOINT_LOG = tmp_path / "ledger-checkpoints.jsonl"  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _wipe_ledger_after_transactional_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """A transactional test commits ledger rows, which the append-only triggers keep from the
    flush that follows it; empty them first (the flush then meets empty tables). The checkpoint
    log of the Celery worker (the one under ``GOV_VAR_DIR``) goes with them: its lines would name
    checkpoints of a ledger that no longer exists, which the next signing refuses."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield
        return
    request.getfixturevalue("transactional_db")  # so this teardown runs before the flush
    worker_log = Path(os.environ["GOV_VAR_DIR"]) / "ledger-checkpoints.jsonl"
    worker_log.unlink(missing_ok=True)  # also signed into by code outside a test's own log (module fixtures)
    yield
    from django.db import connection, transaction

    from audits.ledger import triggers

    with transaction.atomic():
        triggers.wipe_for_tests_rollback_unsafe(connection)
    worker_log.unlink(missing_ok=True)


@pytest.fixture
def security_events() -> Iterator[list[dict[str, Any]]]:
    """The security events (common/security_log.py) logged while the test runs, as their fields."""
    import logging

    events: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append({k: v for k, v in vars(record).items() if k not in ("msg", "args", "exc_info")})

    handler, security = Collect(), logging.getLogger("security")
    security.addHandler(handler)
    yield events
    security.removeHandler(handler)


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    """A project and one person per working role in it, all made through the services."""
    from django.contrib.auth import get_user_model

    from governance.permissions import SYSTEM_USERNAME
    from governance.roles import Role
    from governance.services import project_create, project_role_grant

    User = get_user_model()
    system = User.objects.get(username=SYSTEM_USERNAME)
    project = project_create(actor=system, slug="assistant", name="Assistant")
    cast: dict[str, Any] = {"system": system, "project": project}
    for role in (Role.DATA_STEWARD, Role.ML_ENGINEER, Role.COMPLIANCE_OFFICER, Role.AUDITOR):
        user = User.objects.create_user(username=role.value.replace("_", "-"))
        project_role_grant(actor=system, project=project, user=user, role=role, reason="test setup")
        cast[role.value] = User.objects.get(pk=user.pk)
    return cast
