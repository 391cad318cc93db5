"""``make up``: prepare the embedded default and run the web server, a Celery worker and beat.

Steps: migrate, create the ledger signing key if there is none, seed the demo organisation
(idempotent), collect static files, then start the three processes and print the URL and where the
demo logins are. Ctrl-C (or SIGTERM) stops all three; if one of them dies, the others are stopped
too and the exit status says so. Host and port come from ``GOV_HOST`` and ``GOV_PORT``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.env import env_int, env_str

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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
    _manage("seed_demo", "--url", f"{url}admin/")
    _manage("collectstatic", "--noinput", "--verbosity", "0")
    from config.celery import declare_queues

    declare_queues(
        settings.CELERY_TASK_DEFAULT_QUEUE,
        *settings.CELERY_WORKER_QUEUES,
        settings.TRAINING_GPU_QUEUE,
        settings.TRAINING_CPU_QUEUE,
        settings.REPORTS_QUEUE,
    )

    children: dict[str, subprocess.Popen[bytes]] = {}
    for name, argv in _processes(host, port, var_dir).items():
        # Each child leads its own process group, so Ctrl-C reaches it only through us, once.
        children[name] = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)

    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(
        f"\nThe governance service is up: {url}  (admin: {url}admin/, API docs: {url}api/docs/, health: {url}healthz)\n"
        f"Demo logins: {var_dir / 'demo-logins.txt'} (readable by you only)\n"
        "Web server, Celery worker and Celery beat are running. Press Ctrl-C to stop all of them.\n",
        flush=True,
    )
    failed = None
    while not stopping and failed is None:
        time.sleep(0.5)
        failed = next((name for name, proc in children.items() if proc.poll() is not None), None)
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if failed is not None:
        print(
            f"make up: the {failed} process exited with status {children[failed].returncode}; stopped the others.",
            file=sys.stderr,
        )
        return 1
    print("Stopped the web server, the worker and beat.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
