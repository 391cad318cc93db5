"""`make up` on a fresh var/: migrates, seeds, serves the admin and /healthz, runs a worker and beat,
and Ctrl-C stops everything, the model server the worker started for a live deployment included.
The stop routine on its own, on real process trees: SIGTERM reaches a process in a session of its
own and a double-forked daemon; a second signal kills at once; one process dying stops the rest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.own_service  # conftest.OWN_SERVICE

# A terminal starts its foreground job with SIGINT at its default, so Ctrl-C reaches it; a script's
# background job inherits SIGINT ignored (bin/test-both runs each pass as one), and a stop signal
# ignored on entry stays ignored in make up as in make and Python. The trees under test are started
# as a terminal would start them.
_AS_IN_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])",
]


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


# Run against make up's own var/: a staging deployment of the tiny model, requested by the demo ML
# engineer and approved by the demo platform admin, which make up's worker then starts.
_DEPLOY = """
import json, sys, time
import django
django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from governance.models import Project
from governance.services import approval_request_decide, approval_request_submit
from registry.services import model_create, model_version_register_folder
from registry.tiny_model import build_tiny_gpt2
from serving.services import deployment_request

users = get_user_model().objects
engineer, admin = users.get(username="demo-ml-engineer"), users.get(username="demo-platform-admin")
project = Project.objects.get(slug="support-assistant")
model = model_create(actor=engineer, project=project, slug="tiny", name="Tiny")
folder = build_tiny_gpt2(settings.VAR_DIR / "imports" / "tiny")
version, _ = model_version_register_folder(actor=engineer, model=model, folder=str(folder))
deployment = deployment_request(
    actor=engineer, model_version=version, name="assistant", environment="staging",
    target={"max_tokens": 4, "max_prompt_chars": 400}, guard={"mode": "redact", "entities": ["EMAIL_ADDRESS"]},
)
request = approval_request_submit(
    actor=engineer, subject_type="deployment", subject_id=str(deployment.pk), action="deployment.deploy"
)
approval_request_decide(actor=admin, request_id=request.pk, decision="approve", reason="make up test")
deadline = time.monotonic() + 240
while deployment.state in ("requested", "starting") and time.monotonic() < deadline:
    time.sleep(0.5)
    deployment.refresh_from_db()
print(json.dumps({"pk": deployment.pk, "state": deployment.state, "pid": deployment.pid, "url": deployment.url,
                  "reason": deployment.refusal_reason}))
"""
# What the next make up's worker finds: the stopped server's deployment is recorded as failed.
_SUPERVISE = """
import json
import django
django.setup()
from serving.models import Deployment
from serving.services import deployments_supervise

changed = deployments_supervise()
deployment = Deployment.objects.get()
print(json.dumps({"changed": changed, "state": deployment.state, "pid": deployment.pid,
                  "reason": deployment.refusal_reason}))
"""


def _staging_policies(folder: Path) -> Path:
    """The shipped policies, but staging deployments ask for the training-data evidence only (no
    garak scan), as in the serving tests."""
    shutil.copytree(ROOT / "policies", folder)
    policy = folder / "deployment.deploy.yaml"
    text = policy.read_text()
    staging = text.index("  - when: {environment: staging}")
    policy.write_text(
        text[:staging] + "  - when: {environment: staging}\n"
        "    approvals:\n"
        "      - {role: platform_admin, count: 1}\n"
        "    evidence: [training_data_approved]\n"
        "    expires_after_days: 30\n"
    )
    return folder


def _django(env: dict[str, str], script: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_make_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = subprocess_env(
        embedded=True,
        GOV_VAR_DIR=str(tmp_path),
        GOV_PORT=str(port),
        GOV_DEMO_STORY="0",  # the story (demo/story.py, a minute of CPU) has its own test
        DJANGO_SETTINGS_MODULE="config.settings",
        LEDGER_CHECKPOINT_EVERY_S="2",
        POLICY_DIR=str(_staging_policies(tmp_path / "policies")),
    )
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [*_AS_IN_A_TERMINAL, "make", "up"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deploying: subprocess.Popen[str] | None = None
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
        deploying = _django(env, _DEPLOY)  # meanwhile: it takes a while, mostly the model server's start

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

        # The worker starts a live deployment's model server in a session of its own (so that, in
        # production, it outlives a restart of the worker): no signal to a process group reaches it.
        deployment = _result(deploying)
        assert deployment["state"] == "live", f"{deployment}\n{log.read_text()[-4000:]}"
        server = psutil.Process(deployment["pid"])
        assert _get(f"{deployment['url']}/healthz")[0] == 200

        children = psutil.Process(up.pid).children(recursive=True)
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("gunicorn" in c for c in commands)
        assert any(" worker " in c for c in commands)
        assert any(" beat " in c for c in commands)
        assert server in children and "serving.server" in server.cmdline()
        worker = next(child for child in children if " worker " in " ".join(child.cmdline()))
        assert os.getsid(server.pid) == server.pid != os.getsid(worker.pid)
    finally:
        if deploying is not None and deploying.poll() is None:
            deploying.kill()
        stopping = time.monotonic()
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            up.wait(timeout=180)
        except subprocess.TimeoutExpired:
            for process in psutil.Process(up.pid).children(recursive=True):
                process.kill()
            os.killpg(up.pid, signal.SIGKILL)
            raise
    stopped_in = time.monotonic() - stopping
    output = log.read_text()
    assert "Stopped the web server, the worker and beat, and " in output
    assert f"model server (pid {server.pid})" in output
    survivors = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for process in survivors:  # a failed stop must not leave them running after the test
        process.kill()
    assert survivors == [], f"{len(children)} processes before the stop, these survived: {survivors}"
    for where, listened in (("the web server", port), ("the model server", _port(deployment["url"]))):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", listened)) != 0, f"{where} still listens"
    assert stopped_in < 30, f"stopping took {stopped_in:.1f} s"

    # The deployment still says live with the dead server's pid: the next make up's supervision
    # records it as failed, without ever signalling whatever process has that pid now.
    supervised = _result(_django(env, _SUPERVISE))
    assert supervised == {
        "changed": 1, "state": "failed", "pid": None, "reason": "the server process exited",
    }, supervised  # fmt: skip


# --- The stop routine on real process trees -----------------------------------------------------

_WRITE_PID = (
    "def write_pid(out, name):\n"
    "    import os\n"
    "    with open(f'{out}/{name}.tmp', 'w') as f: f.write(str(os.getpid()))\n"
    "    os.replace(f'{out}/{name}.tmp', f'{out}/{name}.pid')\n"
)
# A server as the worker starts one: a child in a session of its own, its parent living on.
_HOLDER = _WRITE_PID + (
    "import subprocess, sys, time\n"
    "server = _WRITE_PID + 'import sys, time\\nwrite_pid(sys.argv[1], \"server\")\\ntime.sleep(600)\\n'\n"
    "subprocess.Popen([sys.executable, '-c', server, sys.argv[1]], start_new_session=True)\n"
    "write_pid(sys.argv[1], 'holder')\n"
    "time.sleep(600)\n"
).replace("_WRITE_PID", repr(_WRITE_PID))
# A classic daemon: fork, setsid, fork again; the middle process exits, so the daemon is orphaned.
_DAEMONISER = _WRITE_PID + (
    "import os, signal, sys, time\n"
    "stubborn = sys.argv[2] == 'stubborn'\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        if stubborn: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "        write_pid(sys.argv[1], 'daemon')\n"
    "        time.sleep(600)\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "if stubborn: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "write_pid(sys.argv[1], 'daemoniser')\n"
    "time.sleep(600)\n"
)
_QUITTER = (
    "import os, sys, time\nwhile not os.path.exists(sys.argv[1] + '/daemon.pid'): time.sleep(0.05)\nsys.exit(3)\n"
)
_SUPERVISOR = (
    "import json, sys\n"
    "from config.up import supervise\n"
    "commands = json.loads(sys.argv[1])\n"
    "sys.exit(supervise(commands, {name: name for name in commands}, 'up'))\n"
)


def _tree(tmp_path: Path, *, stubborn: bool = False, quitter: bool = False) -> tuple[subprocess.Popen[str], Path]:
    """The stop routine (``config.up.supervise``) over a holder with its server in a session of its
    own and a daemoniser with its double-forked daemon; the log of its output."""
    out = tmp_path / "pids"
    out.mkdir()
    py = sys.executable
    commands = {
        "holder": [py, "-c", _HOLDER, str(out)],
        "daemoniser": [py, "-c", _DAEMONISER, str(out), "stubborn" if stubborn else "plain"],
    }
    if quitter:
        commands["quitter"] = [py, "-c", _QUITTER, str(out)]
    log = tmp_path / "supervisor.log"
    with log.open("w") as handle:
        supervisor = subprocess.Popen(
            [*_AS_IN_A_TERMINAL, py, "-c", _SUPERVISOR, json.dumps(commands)], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
    return supervisor, log


def _pids(tmp_path: Path, supervisor: subprocess.Popen[str], names: tuple[str, ...]) -> dict[str, psutil.Process]:
    deadline = time.monotonic() + 30
    while not all((tmp_path / "pids" / f"{name}.pid").exists() for name in names):
        assert time.monotonic() < deadline and supervisor.poll() is None, "the process tree did not start"
        time.sleep(0.05)
    return {name: psutil.Process(int((tmp_path / "pids" / f"{name}.pid").read_text())) for name in names}


def _end(supervisor: subprocess.Popen[str], tmp_path: Path) -> None:
    """After a failed test: kill what is left of the tree (only processes that name its folder)."""
    if supervisor.poll() is None:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
    for pid_file in (tmp_path / "pids").glob("*.pid"):
        try:
            process = psutil.Process(int(pid_file.read_text()))
            if str(tmp_path) in " ".join(process.cmdline()):
                process.kill()
        except psutil.Error:
            pass


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_sigterm_stops_the_processes_and_what_escaped_their_groups(tmp_path: Path) -> None:
    supervisor, log = _tree(tmp_path)
    try:
        tree = _pids(tmp_path, supervisor, ("holder", "server", "daemoniser", "daemon"))
        descendants = psutil.Process(supervisor.pid).children(recursive=True)
        assert {p.pid for p in tree.values()} <= {p.pid for p in descendants}
        # Neither the server nor the daemon shares a process group with the process that made it,
        # and the daemon, orphaned at birth, was re-parented to the subreaper rather than to init.
        assert os.getpgid(tree["server"].pid) != os.getpgid(tree["holder"].pid)
        assert os.getpgid(tree["daemon"].pid) != os.getpgid(tree["daemoniser"].pid)
        assert tree["daemon"].ppid() == supervisor.pid
        began = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0, log.read_text()
        took = time.monotonic() - began
    finally:
        _end(supervisor, tmp_path)
    assert _alive(descendants) == []
    output = log.read_text()
    assert "Stopped holder and daemoniser, and 2 processes they had left running:" in output
    assert f"(pid {tree['server'].pid})" in output and f"(pid {tree['daemon'].pid})" in output
    assert "killed" not in output
    assert took < 5, f"stopping took {took:.1f} s"


def test_a_second_signal_kills_everything_at_once(tmp_path: Path) -> None:
    supervisor, log = _tree(tmp_path, stubborn=True)  # the daemoniser and its daemon ignore SIGTERM
    try:
        _pids(tmp_path, supervisor, ("holder", "server", "daemoniser", "daemon"))
        descendants = psutil.Process(supervisor.pid).children(recursive=True)
        began = time.monotonic()
        os.killpg(supervisor.pid, signal.SIGINT)  # Ctrl-C...
        time.sleep(1)
        assert supervisor.poll() is None, "a process that ignores SIGTERM has the grace period"
        os.killpg(supervisor.pid, signal.SIGINT)  # ...and Ctrl-C again
        assert supervisor.wait(timeout=10) == 0, log.read_text()
        took = time.monotonic() - began
    finally:
        _end(supervisor, tmp_path)
    assert _alive(descendants) == []
    output = log.read_text()
    assert "Stopping (press Ctrl-C again to kill everything now)" in output
    assert "(daemoniser killed: forced stop)" in output
    assert took < 5, f"a forced stop took {took:.1f} s"


def test_one_process_exiting_stops_the_others_and_their_descendants(tmp_path: Path) -> None:
    supervisor, log = _tree(tmp_path, quitter=True)
    try:
        _pids(tmp_path, supervisor, ("holder", "server", "daemoniser", "daemon"))
        descendants = psutil.Process(supervisor.pid).children(recursive=True)
        assert supervisor.wait(timeout=30) == 1, log.read_text()
    finally:
        _end(supervisor, tmp_path)
    assert _alive(descendants) == []
    output = log.read_text()
    assert "make up: quitter exited with status 3; stopping everything else." in output
    assert "Stopped holder and daemoniser, and 2 processes" in output
    assert "and 2 processes they had left running" in output
