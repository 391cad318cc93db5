"""``make up``: prepare the embedded default and run the web server, a Celery worker and beat.

Steps: migrate, create the ledger signing key if there is none, seed the demo organisation and play
its story (idempotent; ``GOV_DEMO_STORY=0`` leaves the story out), collect static files, then start
the three processes and print the URL and where the demo logins are. Host and port come from
``GOV_HOST`` and ``GOV_PORT``.

Ctrl-C, SIGTERM or SIGHUP stops everything ``make up`` started, and everything those processes
started in turn: the worker's model servers run in sessions of their own (so that, in production,
they outlive a worker restart), which no signal to a process group reaches. This process is
therefore a child subreaper (Linux): a descendant whose parent exits is re-parented here rather
than to init, so it can still be found and stopped. The three processes get SIGTERM first and
``LEADER_GRACE_S`` to stop what they own; then every descendant still running gets SIGTERM and
``DESCENDANT_GRACE_S``; then SIGKILL. A second Ctrl-C (or SIGTERM) kills everything at once. If one
of the three dies, the others and their descendants are stopped the same way and the exit status
says so. The closing line names what was stopped and what had to be killed.

A stop signal ignored when ``make up`` starts stays ignored, as in make and Python: under ``nohup``
SIGHUP, and in a script's background job (``make up &`` without job control) SIGINT; SIGTERM still
stops it there.

Caveats: a SIGKILL of this process itself cannot be handled; on a system without
``PR_SET_CHILD_SUBREAPER`` a descendant orphaned before the stop is out of reach. A deployment whose
model server was stopped stays ``live`` in the database until the next ``make up``'s worker runs
``serving.supervise``, which records it as failed (its pid is checked against the server's command
line, so a reused pid is never taken for it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.env import env_bool, env_int, env_str

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LEADER_GRACE_S = 20.0
DESCENDANT_GRACE_S = 10.0
# Beyond the graces: how long SIGKILLed processes are waited for before they are reported as left.
KILL_WAIT_S = 10.0
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _manage(*args: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"make up: `manage.py {' '.join(args)}` failed with exit status {result.returncode}")


# gunicorn's default access line holds the query string (%(r)s), the Referer (%(f)s) and the user
# of an HTTP Basic Authorization header (%(u)s): any of them may carry a secret or personal data.
# This one logs the path without its query string, and the request id to join the JSON lines.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms %({x-request-id}o)s'


def _processes(host: str, port: int, var_dir: Path) -> dict[str, list[str]]:
    from django.conf import settings

    return {
        "web": [
            str(BIN / "gunicorn"),
            "config.wsgi:application",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(env_int("GOV_WEB_WORKERS", 2, minimum=1)),
            "--access-logfile",
            "-",
            "--access-logformat",
            ACCESS_LOG_FORMAT,
            "--graceful-timeout",
            "10",
        ],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "config.celery",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(env_int("GOV_WORKER_CONCURRENCY", 2, minimum=1)),
            "--queues",
            ",".join(settings.CELERY_WORKER_QUEUES),
            "--hostname",
            "worker@%h",
        ],
        "beat": [
            str(BIN / "celery"),
            "-A",
            "config.celery",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(var_dir / "celerybeat-schedule"),
        ],
    }


LABELS = {"web": "the web server", "worker": "the worker", "beat": "beat"}


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux ``prctl``); ``False``
    where the system has none."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


@dataclass
class StopRequest:
    """Set by the signal handlers: the first stop signal asks to stop, a second one forces it."""

    requested: bool = False
    forced: bool = False

    def handle(self, signum: int, _frame: object) -> None:
        if self.requested:
            self.forced = True
        self.requested = True

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_IGN:  # nohup: leave SIGHUP ignored
                continue
            signal.signal(signum, self.handle)


@dataclass
class StopOutcome:
    killed: list[str] = field(default_factory=list)  # names of the started processes SIGKILLed
    descendants: dict[int, str] = field(default_factory=dict)  # pid: what it was, for the rest
    descendants_killed: list[int] = field(default_factory=list)
    left_running: list[int] = field(default_factory=list)  # could not be stopped at all
    seconds: float = 0.0


def _describe(process: Any) -> str:
    try:
        cmdline = process.cmdline()
        name = "model server" if "serving.server" in cmdline else process.name()
    except Exception:  # it may be gone already: a pid is still worth reporting
        name = "process"
    return f"{name} (pid {process.pid})"


def _running_descendants() -> list[Any]:
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def reap_adopted(started: dict[str, subprocess.Popen[bytes]]) -> None:
    """Reap the exited children this process adopted as subreaper. The processes it started are
    left to their ``Popen`` objects, which must read their exit status themselves."""
    import psutil

    own = {proc.pid for proc in started.values() if proc.returncode is None}
    for child in psutil.Process().children():
        if child.pid in own:
            continue
        try:
            os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_everything(
    started: dict[str, subprocess.Popen[bytes]],
    request: StopRequest,
    *,
    leader_grace_s: float = LEADER_GRACE_S,
    descendant_grace_s: float = DESCENDANT_GRACE_S,
) -> StopOutcome:
    """Stop the started processes, then every descendant still running, and reap them all.

    The started processes come first, each with SIGTERM to itself alone (gunicorn and Celery stop
    their own workers gracefully; a signal to their groups would cut that short). What is left
    afterwards escaped them (a model server in its own session, a double-forked daemon) or was
    orphaned by a kill: it gets SIGTERM, then SIGKILL. ``request.forced`` (a second stop signal)
    turns every wait into an immediate SIGKILL. Descendants are listed again on every round, so
    one forked meanwhile is caught too."""
    began = time.monotonic()
    outcome = StopOutcome()
    for proc in started.values():
        if proc.poll() is None:
            _signal(proc.pid, signal.SIGTERM)
    deadline = began + leader_grace_s
    while any(p.poll() is None for p in started.values()) and not request.forced and time.monotonic() < deadline:
        reap_adopted(started)
        time.sleep(0.1)
    for name, proc in started.items():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            outcome.killed.append(name)

    terminated: set[int] = set()
    deadline = time.monotonic() + descendant_grace_s
    give_up = deadline + KILL_WAIT_S
    while True:
        reap_adopted(started)
        left = _running_descendants()
        if not left:
            break
        now = time.monotonic()
        if now >= give_up:
            outcome.left_running = [p.pid for p in left]
            break
        kill = request.forced or now >= deadline
        for process in left:
            outcome.descendants.setdefault(process.pid, _describe(process))
            if kill:
                _signal(process.pid, signal.SIGKILL)
                if process.pid not in outcome.descendants_killed:
                    outcome.descendants_killed.append(process.pid)
            elif process.pid not in terminated:
                _signal(process.pid, signal.SIGTERM)
                terminated.add(process.pid)
        time.sleep(0.05 if kill else 0.1)
    outcome.seconds = time.monotonic() - began
    return outcome


def _names(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def stop_summary(outcome: StopOutcome, labels: dict[str, str], *, forced: bool) -> str:
    """The closing line: what was stopped, what had to be killed, what could not be stopped."""
    text = f"Stopped {_names(list(labels.values()))}"
    if outcome.killed:
        why = "forced stop" if forced else f"not stopped within {LEADER_GRACE_S:.0f} s"
        text += f" ({_names([labels[name] for name in outcome.killed])} killed: {why})"
    others = [
        f"{what[:-1]}, killed)" if pid in outcome.descendants_killed else what
        for pid, what in outcome.descendants.items()
    ]
    if others:
        plural = "es" if len(others) > 1 else ""
        text += f", and {len(others)} process{plural} they had left running: {', '.join(others)}"
    text += f", in {outcome.seconds:.1f} s."
    if outcome.left_running:
        text += f" Still running, could not be stopped: pids {', '.join(map(str, outcome.left_running))}."
    return text


def supervise(commands: dict[str, list[str]], labels: dict[str, str], banner: str, *, cwd: Path = ROOT) -> int:
    """Start ``commands`` (each leading a session of its own, so that Ctrl-C reaches them only
    through this process, once), print ``banner``, and run until a stop signal or until one of
    them exits; then stop everything (``stop_everything``) and say what was stopped. Returns the
    exit status: 0 after a stop signal, 1 when a process had exited by itself."""
    if not become_subreaper():
        print("make up: no child subreaper here; a process orphaned before the stop may outlive it", file=sys.stderr)
    request = StopRequest()
    request.install()
    started: dict[str, subprocess.Popen[bytes]] = {}
    for name, argv in commands.items():
        started[name] = subprocess.Popen(argv, cwd=cwd, start_new_session=True)
    print(banner, flush=True)
    failed = None
    while not request.requested and failed is None:
        time.sleep(0.5)
        reap_adopted(started)
        failed = next((name for name, proc in started.items() if proc.poll() is not None), None)
    if failed is not None:
        print(
            f"make up: {labels[failed]} exited with status {started[failed].returncode}; stopping everything else.",
            file=sys.stderr,
            flush=True,
        )
    else:
        print("\nStopping (press Ctrl-C again to kill everything now)...", flush=True)
    outcome = stop_everything(started, request)
    stopped = {name: label for name, label in labels.items() if name != failed}
    print(stop_summary(outcome, stopped, forced=request.forced), flush=True)
    return 1 if failed is not None or outcome.left_running else 0


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    host = env_str("GOV_HOST", "127.0.0.1")
    port = env_int("GOV_PORT", 8000, minimum=1)
    import django

    django.setup()
    from django.conf import settings

    var_dir: Path = settings.VAR_DIR
    _manage("ledger", "keygen", "--if-missing")
    _manage("migrate", "--noinput")
    url = f"http://{host}:{port}/"
    # The demo story (demo/story.py) plays one lifecycle through the services; GOV_DEMO_STORY=0 skips it.
    story = ["--story"] if env_bool("GOV_DEMO_STORY", True) else []
    _manage("seed_demo", "--url", f"{url}admin/", *story)
    _manage("collectstatic", "--noinput", "--verbosity", "0")
    from config.celery import declare_queues

    declare_queues(
        settings.CELERY_TASK_DEFAULT_QUEUE,
        *settings.CELERY_WORKER_QUEUES,
        settings.TRAINING_GPU_QUEUE,
        settings.TRAINING_CPU_QUEUE,
        settings.REPORTS_QUEUE,
        settings.PII_SCAN_QUEUE,
    )
    banner = (
        f"\nThe governance service is up: {url}  (admin: {url}admin/, API docs: {url}api/docs/, health: {url}healthz)\n"
        f"Demo logins: {var_dir / 'demo-logins.txt'} (readable by you only)\n"
        "Web server, Celery worker and Celery beat are running. Press Ctrl-C to stop all of them, "
        "and the model servers they started.\n"
    )
    return supervise(_processes(host, port, var_dir), LABELS, banner)


if __name__ == "__main__":
    sys.exit(main())
