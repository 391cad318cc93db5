"""`make up` on a fresh var/: migrates, seeds, serves the admin and /healthz, runs a worker and beat,
and Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from conftest import ROOT, subprocess_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_make_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = subprocess_env(
        embedded=True,
        GOV_VAR_DIR=str(tmp_path),
        GOV_PORT=str(port),
        DJANGO_SETTINGS_MODULE="config.settings",
        LEDGER_CHECKPOINT_EVERY_S="2",
    )
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            ["make", "up"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline and up.poll() is None:
            try:
                status, body = _get(f"{base}/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert status == 200, f"healthz never answered 200:\n{log.read_text()[-4000:]}"
        assert all(check["ok"] for check in json.loads(body)["checks"].values())

        status, page = _get(f"{base}/admin/login/")
        assert status == 200
        assert b'name="username"' in page and b'name="password"' in page

        logins = tmp_path / "demo-logins.txt"
        assert logins.stat().st_mode & 0o777 == 0o600
        assert "demo-compliance-officer\t" in logins.read_text()
        output = log.read_text()
        assert f"{base}/" in output and str(logins) in output

        sent = subprocess.run(
            [
                sys.executable,
                "-c",
                "from config.celery import ping; import json; print(json.dumps(ping.delay('up').get(timeout=90)))",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout.strip().splitlines()[-1])["token"] == "up"

        # Beat schedules the checkpoint task, the worker signs: the demo seeding's entries get signed.
        deadline = time.monotonic() + 60
        while (status := _get(f"{base}/api/v1/ledger/checkpoint")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert status == 200, f"no checkpoint was signed by beat and the worker:\n{log.read_text()[-4000:]}"
        note = _get(f"{base}/api/v1/ledger/checkpoint")[1].decode()
        assert note.startswith("localhost/llmops-governance/ledger\n") and "\n\n\u2014 " in note

        children = psutil.Process(up.pid).children(recursive=True)
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("gunicorn" in c for c in commands)
        assert any(" worker " in c for c in commands)
        assert any(" beat " in c for c in commands)
    finally:
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            raise
    assert "Stopped the web server, the worker and beat." in log.read_text()
    survivors = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the web server still listens"
