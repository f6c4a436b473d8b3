"""A newcomer's first hour: `make run`, what it prints, and the README's commands as pasted.

The end-to-end test starts `make run` for real (on a SQLite file of its own, named by
`DATABASE_URL=… make run` as the PostgreSQL route does), pastes the README's commands
into "another terminal" without that variable, talks to the running service with the
token they made, and stops it with Ctrl-C.
"""

import hashlib
import io
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.management import get_commands

from reportsvc.localrun import (
    make_run_env,
    manage_command,
    remember_databases,
    use_database_of_make_run,
    without_password,
)
from tests.conftest import ON_POSTGRES, postgres_only
from tests.docs_blocks import RUN_ORDER, SETUP_PAGE, all_text, shell_blocks, shell_lines

PROJECT_DIR = Path(__file__).resolve().parent.parent
README = all_text()  # README.md and the documentation site
# Variables a developer's shell may carry that would change what a command does.
CLEARED = ("DATABASE_URL", "REPORTING_DATABASE_URL", "SECRET_KEY", "DEBUG", "OUTPUTS_DIR")
CLEARED += ("PUBLIC_BASE_URL", "HOST", "PORT", "REPORTSVC_VAR_DIR", "MAKEFLAGS", "MAKELEVEL")


def clean_environment(**values):
    environment = {key: value for key, value in os.environ.items() if not key.startswith(CLEARED)}
    environment.update(PYTHONUNBUFFERED="1", **values)
    return environment


# --- what make run remembers -----------------------------------------------------------


def test_make_run_remembers_its_databases_privately_and_forgets_them(tmp_path):
    environment = {
        "REPORTSVC_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://app:s3cret@db.internal:5432/reports",
        "REPORTING_DATABASE_URL_WAREHOUSE": "postgres://reader:pw@dwh:5432/dwh",
        "SECRET_KEY": "never-written",
        "PATH": "/usr/bin",
    }
    remember_databases(environment)
    path = make_run_env(environment)
    assert path == tmp_path / "make-run.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        "DATABASE_URL=postgres://app:s3cret@db.internal:5432/reports",
        "REPORTING_DATABASE_URL_WAREHOUSE=postgres://reader:pw@dwh:5432/dwh",
    ]
    remember_databases({"REPORTSVC_VAR_DIR": str(tmp_path), "DATABASE_URL": ""})
    assert not path.exists()  # `make run` without DATABASE_URL: back to the default


def test_manage_py_uses_them_only_without_a_database_url_and_says_so(tmp_path):
    remembered = {
        "REPORTSVC_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://app:s3cret@db.internal:5432/reports",
    }
    remember_databases(remembered)
    stderr = io.StringIO()
    environment = {"REPORTSVC_VAR_DIR": str(tmp_path)}
    use_database_of_make_run(environment, stderr=stderr)
    assert environment["DATABASE_URL"] == remembered["DATABASE_URL"]
    assert "postgres://app:***@db.internal:5432/reports" in stderr.getvalue()
    assert "s3cret" not in stderr.getvalue()
    explicit = {"REPORTSVC_VAR_DIR": str(tmp_path), "DATABASE_URL": "sqlite:///other.db"}
    use_database_of_make_run(explicit, stderr=io.StringIO())
    assert explicit["DATABASE_URL"] == "sqlite:///other.db"


def test_a_tampered_file_sets_nothing_but_databases(tmp_path):
    (tmp_path / "make-run.env").write_bytes(
        b"SECRET_KEY=stolen\nPATH=/evil\nDEBUG=1\n\xff\xfe\n"
        b"DATABASE_URL=sqlite:///x.db\nREPORTING_DATABASE_URL=sqlite:///y.db\n"
    )
    environment = {"REPORTSVC_VAR_DIR": str(tmp_path)}
    use_database_of_make_run(environment, stderr=io.StringIO())  # not UTF-8: ignored
    assert environment == {"REPORTSVC_VAR_DIR": str(tmp_path)}
    (tmp_path / "make-run.env").write_text("SECRET_KEY=stolen\nDATABASE_URL=sqlite:///x.db\n")
    use_database_of_make_run(environment, stderr=io.StringIO())
    assert environment == {"REPORTSVC_VAR_DIR": str(tmp_path), "DATABASE_URL": "sqlite:///x.db"}


def test_passwords_are_hidden_in_messages():
    assert without_password("postgres://u:p%40ss@h:5432/d") == "postgres://u:***@h:5432/d"
    assert without_password("postgres://u@h/d") == "postgres://u@h/d"
    assert without_password("sqlite:////tmp/x.sqlite3") == "sqlite:////tmp/x.sqlite3"


def test_printed_commands_carry_what_they_need():
    assert manage_command("changepassword", "admin", environment={}).startswith("DEBUG=1 ")
    command = manage_command("changepassword", "o'brien", environment={"SECRET_KEY": "k"})
    assert shlex.split(command)[1:] == ["manage.py", "changepassword", "o'brien"]


# --- manage.py's own errors ------------------------------------------------------------


def manage(*arguments, environment=None, python=(sys.executable,), timeout=60, **kwargs):
    return subprocess.run(
        [*python, "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=environment or clean_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def test_a_missing_secret_key_is_one_line_and_status_1(tmp_path):
    for command in (["changepassword", "admin"], ["migrate"], ["runreport", "x"]):
        result = manage(*command, environment=clean_environment(REPORTSVC_VAR_DIR=str(tmp_path)))
        assert result.returncode == 1
        assert result.stderr == (
            "manage.py: SECRET_KEY is not set. Set it in the environment (or .env), "
            "or set DEBUG=1 for local development.\n"
        )
        assert result.stdout == ""


def test_a_python_without_django_points_at_the_virtualenv():
    # -S: no site-packages, like a system Python without Django.
    result = manage("check", python=(sys.executable, "-S"))
    assert result.returncode == 1
    assert "No module named 'django'" in result.stderr
    assert ".venv/bin/python manage.py" in result.stderr
    assert "Traceback" not in result.stderr


@postgres_only
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_token_made_in_another_terminal_works_on_the_postgresql_make_run_serves(tmp_path):
    """DATABASE_URL=postgres://… make run, then the README's createapitoken without it."""
    from django.db import connection
    from rest_framework.test import APIClient

    from tests.api_helpers import make_user
    from tests.workers import database_url_of_test_run

    make_user("admin", "view")
    url = database_url_of_test_run()
    remember_databases({"REPORTSVC_VAR_DIR": str(tmp_path), "DATABASE_URL": url})
    result = manage(
        "createapitoken",
        "admin",
        environment=clean_environment(
            REPORTSVC_VAR_DIR=str(tmp_path), SECRET_KEY=os.environ.get("SECRET_KEY", "x")
        ),
    )
    assert result.returncode == 0, result.stderr
    assert f"Using the database `make run` serves ({tmp_path / 'make-run.env'})" in result.stderr
    assert connection.settings_dict["NAME"] in result.stderr
    token = result.stdout.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/reports/").status_code == 200


# --- the README's commands ---------------------------------------------------------------


def readme_shell_lines():
    """Commands in the shell blocks of README.md and docs/, one per line, comments dropped."""
    return shell_lines()


def test_readme_commands_name_things_that_exist():
    lines = readme_shell_lines()
    targets = set(re.findall(r"^([a-z-]+):", (PROJECT_DIR / "Makefile").read_text(), re.M))
    commands = get_commands()
    assert len(lines) > 20
    for line in lines:
        in_container = line.startswith("docker ")
        for target in re.findall(r"(?:^|\s)make ([a-z-]+)", line):
            assert target in targets, line
        for command in re.findall(r"manage\.py (\w+)", line):
            assert command in commands, line
        if not in_container:
            # The project's interpreter, with what manage.py needs to start.
            assert not re.search(r"(?:^|[\s(=])python3? ", line), line
            if ".venv/bin/python manage.py" in line:
                assert re.search(r"(?:^|\()(?:DEBUG=1|SECRET_KEY=\S+) \.venv/bin/python", line)
        for script in re.findall(r"\b((?:bench|tools)/\w+\.py)", line):
            assert (PROJECT_DIR / script).is_file(), line
    inline = re.findall(r"`((?:DEBUG=1 )?(?:\.venv/bin/)?python3? [^`]+)`", README)
    for command in (command for command in inline if "…" not in command):  # … = a pattern
        assert command.startswith(
            ("DEBUG=1 .venv/bin/python ", ".venv/bin/python bench/", ".venv/bin/python tools/")
        ), command


def readme_line(prefix):
    return next(line for line in readme_shell_lines() if line.startswith(prefix))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MakeRun:
    """`make run` in its own process group, as in a terminal of its own."""

    def __init__(self, environment, log_path):
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/bin/.installed", "run"],
            cwd=PROJECT_DIR,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self):
        return Path(self.log_path).read_text()

    def wait_for(self, *texts, timeout=90):
        deadline = time.monotonic() + timeout
        while not all(text in self.output() for text in texts):
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.2)

    def ctrl_c(self):
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground group."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(60)
        finally:
            self._log.close()

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def run_the_runnable_blocks(folder, environment):
    """Every block titled runnable, page by page, each page in a terminal of its own.

    The terminal's folder stands for the project folder (the files the blocks name are
    links to the project's), so what the blocks download lands there, not in the project.
    """
    folder.mkdir()
    for name in (".venv", "manage.py", "reportsvc"):
        (folder / name).symlink_to(PROJECT_DIR / name)
    setup = next(block for block in shell_blocks(SETUP_PAGE) if block.runnable)
    for page in RUN_ORDER:
        runnable = [block for block in shell_blocks(page) if block.runnable]
        if not any("TOKEN=$(" in block.code for block in runnable):
            runnable = [setup, *runnable]  # "with API and AUTH as the quick start sets them"
        script = "set -e\n" + "".join(
            f"{block.code}\necho; echo '--- ok {block}'\n" for block in runnable
        )
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=folder,
            env=environment,
            capture_output=True,
            text=True,
            timeout=240,
            start_new_session=True,
        )
        done = re.findall(r"^--- ok (\S+)$", result.stdout, flags=re.M)
        assert result.returncode == 0, (page, "passed:", done, result.stdout[-3000:], result.stderr)
        assert done == [str(block) for block in runnable]
    # The tour's end: a workbook and a CSV, saved under their own names.
    workbooks = list(folder.glob("daily-revenue-by-currency_*.xlsx"))
    assert workbooks and workbooks[0].read_bytes()[:2] == b"PK", list(folder.iterdir())
    assert list(folder.glob("top-customers-this-week_*.csv")), list(folder.iterdir())


@pytest.mark.long_running
@pytest.mark.skipif(ON_POSTGRES, reason="uses a SQLite file of its own: runs in the SQLite pass")
def test_make_run_then_the_readme_commands_in_another_terminal(tmp_path):
    port = free_port()
    served = tmp_path / "served.sqlite3"
    var = tmp_path / "var"
    # The service's terminal: `DATABASE_URL=… PORT=… make run`.
    service = MakeRun(
        clean_environment(
            DATABASE_URL=f"sqlite:///{served}", PORT=str(port), REPORTSVC_VAR_DIR=str(var)
        ),
        tmp_path / "make-run.log",
    )
    try:
        service.wait_for(f"Starting development server at http://127.0.0.1:{port}/", "started:")
        banner = service.output()
        assert f"Open http://127.0.0.1:{port}/admin/" in banner  # the real address
        password = re.search(r"user 'admin', password '([^']+)'", banner).group(1)
        (saved,) = var.glob("admin-password-sqlite3-served-*")  # this database's own file
        assert saved.read_text().strip() == password
        change_it = re.search(r"Change it: (.+)", banner).group(1)
        assert change_it == "DEBUG=1 .venv/bin/python manage.py changepassword admin"

        # Another terminal: no DATABASE_URL, commands pasted as printed.
        terminal = clean_environment(REPORTSVC_VAR_DIR=str(var))

        def paste(command, **kwargs):
            return subprocess.run(
                ["bash", "-c", command],
                cwd=PROJECT_DIR,
                env=terminal,
                capture_output=True,
                text=True,
                timeout=120,
                start_new_session=True,  # no terminal: getpass reads stdin
                **kwargs,
            )

        token_line = readme_line("TOKEN=$(")
        made = paste(f'{token_line}\necho "$TOKEN"')
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{40}", token), made
        assert "Using the database `make run` serves" in made.stderr
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/reports/", headers={"Authorization": f"Token {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            reports = json.load(response)
        assert len(reports) == 5  # the token is valid where the service looks

        for line in readme_shell_lines():
            if line.startswith("DEBUG=1 .venv/bin/python manage.py runreport"):
                result = paste(line)
                assert result.returncode == 0, (line, result.stdout, result.stderr)
        summary = json.loads(
            paste(
                readme_line(
                    "DEBUG=1 .venv/bin/python manage.py runreport daily-revenue-by-currency --json"
                )
            ).stdout.splitlines()[-1]
        )
        assert summary["status"] == "succeeded" and summary["row_count"] > 0

        run_the_runnable_blocks(tmp_path / "terminal", terminal)

        changed = paste(change_it, input="a-brand-new-password-7\na-brand-new-password-7\n")
        assert changed.returncode == 0, changed.stderr
        assert "Password changed successfully for user 'admin'" in changed.stdout
        with sqlite3.connect(served) as database:
            kept = database.execute("SELECT digest FROM authtoken_token").fetchall()
        # Never a key itself: the first token's digest, and those the pasted blocks made.
        assert (hashlib.sha256(token.encode()).hexdigest(),) in kept
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for (digest,) in kept)
        assert not (var / "reportsvc.sqlite3").exists()  # nothing went to the default
    finally:
        status = service.ctrl_c() if service.process.poll() is None else service.process.poll()
        service.kill()

    # Ctrl-C is a normal stop: both processes exit 0, make reports no error.
    output = service.output()
    assert output.rstrip().endswith("Stopped."), output[-2000:]
    assert re.search(r"web\s+\| stopped \(rc=0\)", output), output[-2000:]
    assert re.search(r"worker\s+\| stopped \(rc=0\)", output), output[-2000:]
    assert "rc=-" not in output and "make: ***" not in output and "Traceback" not in output
    assert status in (0, -signal.SIGINT)  # make itself ends by the SIGINT, quietly
    assert port_is_free(port)


def port_is_free(port):
    """Nothing listens there, and a new server can bind it (as servers do: SO_REUSEADDR,
    past the closed connections' TIME_WAIT)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def process_is_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")  # a zombie runs nothing and holds no port
    return stat.exists() and stat.read_text().split(") ")[1].startswith("Z")


# Some seconds of SQLite's work, and one statement: a run to stop in the middle of.
SLOW_SQL = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000000) "
    "SELECT count(*) AS n FROM c"
)


@pytest.mark.long_running
@pytest.mark.skipif(ON_POSTGRES, reason="uses a SQLite file of its own: runs in the SQLite pass")
def test_kill_of_make_stops_everything_and_lets_the_running_run_finish(tmp_path):
    port = free_port()
    served = tmp_path / "served.sqlite3"
    var = tmp_path / "var"
    service = MakeRun(
        clean_environment(
            DATABASE_URL=f"sqlite:///{served}", PORT=str(port), REPORTSVC_VAR_DIR=str(var)
        ),
        tmp_path / "make-run.log",
    )
    try:
        service.wait_for(f"Starting development server at http://127.0.0.1:{port}/", "started:")
        pids = [int(pid) for pid in re.findall(r"\| started \(pid (\d+)\)", service.output())]
        assert len(pids) == 2
        token = subprocess.run(
            [sys.executable, "manage.py", "createapitoken", "admin"],
            cwd=PROJECT_DIR,
            env=clean_environment(REPORTSVC_VAR_DIR=str(var), DEBUG="1"),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()

        def call(method, path, body=None):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/{path}",
                method=method,
                data=json.dumps(body).encode() if body is not None else None,
                headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)

        call("POST", "reports/", {"name": "Slow", "slug": "slow", "sql": SLOW_SQL})
        run = call("POST", "reports/slow/run/")
        deadline = time.monotonic() + 60
        while call("GET", f"runs/{run['id']}/")["status"] == "queued":
            assert time.monotonic() < deadline, service.output()
            time.sleep(0.1)
        os.kill(service.process.pid, signal.SIGTERM)  # `kill <make's pid>`
        status = service.process.wait(90)
    finally:
        service.kill()
        service._log.close()

    output = service.output()
    assert status == -signal.SIGTERM  # make says it was terminated
    assert output.rstrip().endswith("Stopped."), output[-3000:]
    assert re.search(r"worker\s+\| stopped \(rc=0\)", output), output[-3000:]
    assert re.search(r"web\s+\| stopped \(rc=0\)", output), output[-3000:]
    assert all(process_is_gone(pid) for pid in pids), output[-3000:]
    assert port_is_free(port)
    with sqlite3.connect(served) as database:
        (final,) = database.execute(
            "SELECT status FROM runs_run WHERE id = ?", [run["id"]]
        ).fetchone()
    assert final == "succeeded", output[-3000:]  # finished within the grace, not left running
    # It was running when the stop came, and finished after it.
    assert output.index("stopping: SIGTERM") < output.index(f"run {run['id']} of slow succeeded")


@postgres_only
@pytest.mark.long_running
def test_migrate_by_a_createrole_owner_says_nothing_alarming(tmp_path):
    """A fresh database owned by a role with CREATEROLE (no superuser): the first migrate
    creates the demo source's roles without warning that they do not exist yet, and
    later ones say nothing about them either."""
    import psycopg
    from django.db import connection

    owner = f"reportsvc_owner_{os.getpid()}"
    database = f"reportsvc_quiet_{os.getpid()}"
    settings_dict = connection.settings_dict
    admin = psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        password=settings_dict.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )
    roles = [owner, f"{owner}_demo_reader", *(f"{owner}_demo_reader_{n}" for n in range(1, 5))]
    try:
        admin.execute(f"CREATE ROLE \"{owner}\" LOGIN CREATEROLE PASSWORD 'pw'")
        admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
        environment = clean_environment(
            DATABASE_URL=(
                f"postgres://{owner}:pw@{settings_dict['HOST'] or '127.0.0.1'}:"
                f"{settings_dict['PORT'] or 5432}/{database}"
            ),
            DEBUG="1",
            REPORTSVC_VAR_DIR=str(tmp_path),
        )
        for attempt in ("first", "again"):
            result = manage("migrate", "--noinput", environment=environment, timeout=300)
            said = result.stdout + result.stderr
            assert result.returncode == 0, said
            assert not re.search(r"W001|Warning|NOTICE|could not|does not exist", said), (
                attempt,
                said,
            )
        checked = manage("check", environment=environment)
        assert "System check identified no issues" in checked.stdout, checked.stderr
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in reversed(roles):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()
