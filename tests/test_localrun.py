"""The supervisor `make run` ends in: every process stops, however the supervisor is stopped.

Real processes under a real supervisor process; the web server and the worker are
stood in for by small Python programs that stop the way they do (SIGTERM: a clean
exit, after a while for the worker), so each case takes seconds. The whole `make run`
is in tests/test_first_run.py.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reportsvc.localrun import (
    DEFAULT_ADDRESS,
    admin_password_file,
    admin_password_path,
    database_label,
    procfile_processes,
    remember_address,
    remembered_address,
    served_address,
    stop_timeout,
    write_admin_password,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent

# Stops on SIGTERM after `delay` seconds, with status 0; writes its pid first.
STOPPER = (
    "import os, signal, sys, time\n"
    "delay = float(sys.argv[1])\n"
    "def stop(*_):\n"
    "    print('stopping', flush=True); time.sleep(delay); print('done', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "print('pid', os.getpid(), flush=True)\n"
    "while True: time.sleep(1)\n"
)


def pids_in(output, name):
    return [int(pid) for pid in re.findall(rf"{name}\s+\| pid (\d+)", output)]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: it holds no port and runs nothing.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


class Supervised:
    def __init__(self, tmp_path, procfile, **environment):
        script = tmp_path / "stopper.py"
        script.write_text(STOPPER)
        (tmp_path / "Procfile").write_text(procfile.format(python=sys.executable, script=script))
        self.log = tmp_path / "supervisor.log"
        self._log = open(self.log, "w")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reportsvc.localrun", "serve", str(tmp_path / "Procfile")],
            cwd=PROJECT_DIR,
            env={**os.environ, **environment},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal of its own
        )

    def output(self):
        return self.log.read_text()

    def wait_for(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output()):
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def wait(self, timeout=60):
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def supervised(tmp_path):
    made = []

    def start(procfile, **environment):
        made.append(Supervised(tmp_path, procfile, **environment))
        return made[-1]

    yield start
    for supervisor in made:
        supervisor.kill()
        for pid in pids_in(supervisor.output(), r"\w+"):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


TWO = "web: exec {python} {script} 0\nworker: exec {python} {script} 1.5\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_every_process_and_waits_for_the_slow_one(supervised, signum):
    supervisor = supervised(TWO)
    supervisor.wait_for(r"web\s+\| pid \d+")
    supervisor.wait_for(r"worker\s+\| pid \d+")
    pids = pids_in(supervisor.output(), "web") + pids_in(supervisor.output(), "worker")
    started = time.monotonic()
    os.kill(supervisor.process.pid, signum)  # the terminal's Ctrl-C, or kill <pid>
    assert supervisor.wait() == 0
    assert time.monotonic() - started >= 1.4  # the worker was given its time
    output = supervisor.output()
    assert re.search(r"worker\s+\| done", output), output  # finished, not killed
    assert re.search(r"web\s+\| stopped \(rc=0\)", output)
    assert re.search(r"worker\s+\| stopped \(rc=0\)", output)
    assert output.endswith("Stopped.\n")
    assert not [pid for pid in pids if alive(pid)]


def test_a_process_that_ends_by_itself_stops_the_others_and_fails(supervised):
    supervisor = supervised(
        "web: exec {python} -c 'import sys, time; time.sleep(0.5); sys.exit(3)'\n"
        "worker: exec {python} {script} 0.2\n"
    )
    assert supervisor.wait() == 1
    output = supervisor.output()
    assert re.search(r"web\s+\| exited by itself \(rc=3\): stopping the rest", output)
    assert re.search(r"worker\s+\| done", output)
    assert output.endswith("Stopped: web exited with status 3.\n"), output


@pytest.mark.long_running
def test_a_process_that_does_not_stop_is_killed_after_the_grace(supervised):
    # Grace 0: the supervisor waits its margin (10 s), then kills.
    supervisor = supervised(
        "web: exec {python} {script} 0\n"
        "worker: exec {python} -c 'import signal, time; "
        'signal.signal(signal.SIGTERM, signal.SIG_IGN); print("pid", flush=True); '
        "time.sleep(600)'\n",
        WORKER_SHUTDOWN_GRACE_SECONDS="0",
    )
    supervisor.wait_for(r"worker\s+\| pid")
    os.kill(supervisor.process.pid, signal.SIGTERM)
    assert supervisor.wait(60) == 1
    output = supervisor.output()
    assert re.search(r"worker\s+\| did not stop within 10 s: killed", output)
    assert re.search(r"worker\s+\| stopped \(rc=-9\)", output)


def test_what_a_process_started_in_its_group_goes_too(supervised):
    # The development server's autoreloader starts the real server as its child.
    supervisor = supervised(
        "web: {python} {script} 0 & echo child $!; wait\nworker: exec {python} {script} 0\n"
    )
    supervisor.wait_for(r"web\s+\| child \d+")
    supervisor.wait_for(r"web\s+\| pid \d+")
    child = int(re.search(r"web\s+\| child (\d+)", supervisor.output()).group(1))
    os.kill(supervisor.process.pid, signal.SIGINT)
    supervisor.wait()
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_processes_end_when_the_supervisor_is_killed(supervised):
    supervisor = supervised(TWO)
    supervisor.wait_for(r"web\s+\| pid \d+")
    supervisor.wait_for(r"worker\s+\| pid \d+")
    pids = pids_in(supervisor.output(), "web") + pids_in(supervisor.output(), "worker")
    supervisor.process.kill()  # SIGKILL: no chance to stop them itself
    supervisor.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]


# --- small pieces ----------------------------------------------------------------------


def test_procfile_lines(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("# comment\nweb: exec a b:c\n\nworker:exec d\n")
    assert procfile_processes(procfile) == {"web": "exec a b:c", "worker": "exec d"}
    assert list(procfile_processes(PROJECT_DIR / "Procfile")) == ["web", "worker"]


def test_the_stop_waits_for_the_workers_grace():
    assert stop_timeout({}) == 40
    assert stop_timeout({"WORKER_SHUTDOWN_GRACE_SECONDS": "5"}) == 15
    assert stop_timeout({"WORKER_SHUTDOWN_GRACE_SECONDS": "x"}) == 40


def test_the_address_make_run_serves(tmp_path):
    assert served_address({}) == "http://127.0.0.1:8000"
    assert served_address({"HOST": "0.0.0.0", "PORT": "8761"}) == "http://127.0.0.1:8761"
    assert served_address({"HOST": "::1", "PORT": "9"}) == "http://[::1]:9"
    environment = {"REPORTSVC_VAR_DIR": str(tmp_path)}
    assert remembered_address(environment) == DEFAULT_ADDRESS  # before any make run
    remember_address({**environment, "PORT": "8761"})
    assert remembered_address(environment) == "http://127.0.0.1:8761"
    (tmp_path / "make-run.address").write_text("javascript:alert(1)\n")
    assert remembered_address(environment) == DEFAULT_ADDRESS
    printed = subprocess.run(
        [sys.executable, "-m", "reportsvc.localrun", "address"],
        cwd=PROJECT_DIR,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout == DEFAULT_ADDRESS + "\n"


def test_an_unknown_command_says_how_to_call_it():
    result = subprocess.run(
        [sys.executable, "-m", "reportsvc.localrun", "nonsense"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "serve [PROCFILE]" in result.stderr


SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/x/var/reportsvc.sqlite3"}
POSTGRES = {"ENGINE": "django.db.backends.postgresql", "NAME": "reportsvc", "HOST": "h"}


def test_each_database_keeps_its_own_admin_password(tmp_path):
    assert database_label(SQLITE).startswith("sqlite3-reportsvc-")
    assert database_label(POSTGRES).startswith("postgresql-reportsvc-")
    assert database_label(POSTGRES) != database_label({**POSTGRES, "HOST": "other"})
    assert database_label({"ENGINE": "x", "NAME": "../../etc/passwd"}).count("/") == 0
    write_admin_password("sqlite-one", tmp_path, SQLITE)
    write_admin_password("postgres-one", tmp_path, POSTGRES)  # then PostgreSQL ...
    # ... then SQLite again: its own password, which still opens its login.
    found = admin_password_file(tmp_path, SQLITE, opens=lambda password: password == "sqlite-one")
    assert found == admin_password_path(tmp_path, SQLITE)
    assert found.read_text() == "sqlite-one\n"


def test_a_password_file_that_opens_nothing_goes(tmp_path):
    write_admin_password("old", tmp_path, SQLITE)
    assert admin_password_file(tmp_path, SQLITE, opens=lambda password: False) is None
    assert not admin_password_path(tmp_path, SQLITE).exists()


def test_the_one_file_of_earlier_versions_moves_to_the_database_it_opens(tmp_path):
    (tmp_path / "admin-password").write_text("kept\n")
    assert admin_password_file(tmp_path, POSTGRES, opens=lambda password: False) is None
    assert (tmp_path / "admin-password").exists()  # not this database's: left alone
    found = admin_password_file(tmp_path, SQLITE, opens=lambda password: password == "kept")
    assert found == admin_password_path(tmp_path, SQLITE)
    assert not (tmp_path / "admin-password").exists()
