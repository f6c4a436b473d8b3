"""Conveniences for the local `make run` set-up, so what it prints can be pasted as is.

- ``make run`` remembers the databases it was started with (``DATABASE_URL`` and
  ``REPORTING_DATABASE_URL*`` from its environment) in ``var/make-run.env`` (under
  ``REPORTSVC_VAR_DIR`` when that is in the environment); manage.py uses them when
  ``DATABASE_URL`` is not set, so ``.venv/bin/python manage.py …`` in another terminal
  reaches the database the service is using. It also notes its address in
  ``var/make-run.address``: ``python -m reportsvc.localrun address`` prints it, so the
  documentation's commands reach the server at its real port.
- The first admin password is also written to ``<var>/admin-password-<database>``
  (mode 0600), one file per database, so switching databases never shows a password
  that does not open the login of the one served.
- ``serve`` is the small supervisor ``make run`` ends in: it starts the Procfile's
  processes (web server and worker), prefixes their output with their names, and stops
  them all however it is stopped itself (Ctrl-C, SIGTERM to ``make``, a closed
  terminal), giving the worker its shutdown grace to finish a run in progress.

Importable before Django's settings are loaded (manage.py reads the file first).
"""

import contextlib
import ctypes
import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
MAKE_RUN_ENV_NAME = "make-run.env"
MAKE_RUN_ADDRESS_NAME = "make-run.address"
DEFAULT_ADDRESS = "http://127.0.0.1:8000"
ADMIN_PASSWORD_FILE_NAME = "admin-password"


def _remembered_names(environment):
    return sorted(
        name
        for name in environment
        if name == "DATABASE_URL"
        or name == "REPORTING_DATABASE_URL"
        or name.startswith("REPORTING_DATABASE_URL_")
    )


def _write_private(path, text):
    """Write ``text`` to ``path``, readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a fresh file gets the mode below, whatever was there
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


def make_run_env(environment):
    """Where ``make run`` keeps its databases (the same folder as the SQLite default)."""
    return Path(environment.get("REPORTSVC_VAR_DIR") or PROJECT_DIR / "var") / MAKE_RUN_ENV_NAME


def remember_databases(environment=None):
    """Record the database variables ``make run`` got; forget them if it got none."""
    environment = os.environ if environment is None else environment
    path = make_run_env(environment)
    names = [name for name in _remembered_names(environment) if environment[name]]
    if not names:
        path.unlink(missing_ok=True)
        return {}
    remembered = {name: environment[name] for name in names if "\n" not in environment[name]}
    _write_private(
        path,
        "# Written by `make run`: the databases it serves. manage.py uses them when\n"
        "# DATABASE_URL is not set. `make run` without DATABASE_URL removes this file.\n"
        + "".join(f"{name}={value}\n" for name, value in remembered.items()),
    )
    return remembered


def served_address(environment):
    """The address ``make run``'s web server answers at, from its HOST and PORT."""
    host = environment.get("HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # listening everywhere: this machine reaches it on loopback
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{environment.get('PORT') or 8000}"


def remember_address(environment=None):
    """Record where ``make run`` serves, so commands in another terminal can ask."""
    environment = os.environ if environment is None else environment
    path = make_run_env(environment).with_name(MAKE_RUN_ADDRESS_NAME)
    address = served_address(environment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(address + "\n", encoding="utf-8")
    return address


def remembered_address(environment=None):
    """Where the last ``make run`` served (the default address before any)."""
    environment = os.environ if environment is None else environment
    path = make_run_env(environment).with_name(MAKE_RUN_ADDRESS_NAME)
    try:
        address = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return DEFAULT_ADDRESS
    return address if address.startswith(("http://", "https://")) else DEFAULT_ADDRESS


def read_remembered(path):
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {name: value for name, value in pairs if _remembered_names([name])}


def without_password(url):
    """``url`` with its password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def use_database_of_make_run(environment=None, stderr=None):
    """Without DATABASE_URL in the environment, take the databases ``make run`` uses."""
    environment = os.environ if environment is None else environment
    if "DATABASE_URL" in environment:
        return {}
    path = make_run_env(environment)
    remembered = read_remembered(path)
    if "DATABASE_URL" not in remembered:
        return {}
    for name, value in remembered.items():
        environment.setdefault(name, value)
    (stderr or sys.stderr).write(
        f"Using the database `make run` serves ({display_path(path)}): "
        f"{without_password(remembered['DATABASE_URL'])}\n"
    )
    return remembered


def display_path(path):
    """``path`` relative to the current folder when it is inside it, else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def manage_command(*arguments, environment=None):
    """A manage.py command line that works when pasted in the project folder.

    With the interpreter running now (as ``.venv/bin/…`` when it is the project's), and
    with ``DEBUG=1`` when there is no SECRET_KEY in the environment (as under ``make
    run``), since manage.py refuses to start without either.
    """
    environment = os.environ if environment is None else environment
    python = Path(sys.executable)
    if python.parent.parent.resolve() == (PROJECT_DIR / ".venv").resolve():
        python = Path(".venv") / "bin" / python.name
    prefix = "" if environment.get("SECRET_KEY") else "DEBUG=1 "
    return prefix + shlex.join([str(python), "manage.py", *arguments])


def database_label(database):
    """A file-name-safe name of a database (Django settings), the same each time.

    Readable (vendor and database name) and unique (a digest of where it is), so each
    database `make run` serves keeps its own admin password file.
    """
    vendor = database.get("ENGINE", "").rsplit(".", 1)[-1] or "database"
    name = str(database.get("NAME") or "")
    readable = Path(name).stem  # a file's name without its folder, or the database's name
    where = "|".join(str(database.get(key) or "") for key in ("ENGINE", "HOST", "PORT", "NAME"))
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{vendor}-{readable}")[:60]
    return f"{safe}-{digest}"


def admin_password_path(var_dir, database):
    return Path(var_dir) / f"{ADMIN_PASSWORD_FILE_NAME}-{database_label(database)}"


def write_admin_password(password, var_dir, database):
    """Keep the generated admin password of this database where only this user reads it."""
    path = admin_password_path(var_dir, database)
    _write_private(path, password + "\n")
    return path


def admin_password_file(var_dir, database, opens):
    """The file holding this database's admin password, if it still opens the login.

    ``opens(password)`` says whether a password opens the login. A file whose password
    no longer does (changed since) is removed rather than shown; a password kept by an
    earlier version in ``<var>/admin-password``, one file for every database, moves to
    this database's file when it opens this database's login.
    """
    path = admin_password_path(var_dir, database)
    legacy = Path(var_dir) / ADMIN_PASSWORD_FILE_NAME
    for candidate in (path, legacy):
        try:
            password = candidate.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if password and opens(password):
            if candidate == legacy:
                candidate.replace(path)
            return path
        if candidate == path:
            candidate.unlink(missing_ok=True)
    return None


# --- the supervisor of `make run` --------------------------------------------------------

# Beyond the worker's own grace: how long its stop may take when the database is slow to
# answer (it gives up 5 s after the grace), plus a margin.
STOP_MARGIN_SECONDS = 10
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def procfile_processes(path):
    """``name: command`` lines of a Procfile, in their order."""
    processes = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        name, colon, command = line.partition(":")
        if colon and name.strip() and not line.lstrip().startswith("#"):
            processes[name.strip()] = command.strip()
    return processes


def stop_timeout(environment):
    """How long the processes may take to stop: the worker's shutdown grace and a margin."""
    try:
        grace = float(environment.get("WORKER_SHUTDOWN_GRACE_SECONDS") or 30)
    except ValueError:
        grace = 30.0
    return grace + STOP_MARGIN_SECONDS


def _end_with_parent():
    """In a child: get SIGTERM if the supervisor itself dies (killed with -9)."""
    # Not on Linux: no such call, and the supervisor's own stop still holds.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    command: str
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    signalled: bool = field(default=False)

    @property
    def returncode(self):
        return self.process.poll()


class Supervisor:
    """Run processes together; stop them all, each the way it stops, when one stops or we do.

    Each process runs in a process group of its own, so a Ctrl-C in the terminal reaches
    only the supervisor, which then sends SIGTERM to every group (the development
    server's autoreloader and the server it started alike) and waits for them: the
    worker lets a run in progress finish, or fails it, within its shutdown grace.
    A process that has not stopped within ``timeout`` seconds is killed.
    """

    def __init__(self, processes, environment=None, timeout=None, output=None):
        self.environment = dict(os.environ if environment is None else environment)
        self.environment.setdefault("PYTHONUNBUFFERED", "1")
        self.timeout = stop_timeout(self.environment) if timeout is None else timeout
        self.output = output or sys.stdout
        self.children = [Child(name, command) for name, command in processes.items()]
        self.width = max(len(child.name) for child in self.children)
        self.stop_requested = threading.Event()
        self.stop_reason = None
        self._lock = threading.Lock()

    def say(self, name, text):
        with self._lock:
            self.output.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {text}\n")
            self.output.flush()

    def _forward(self, child):
        for line in child.process.stdout:
            self.say(child.name, line.rstrip("\n"))

    def start(self):
        # Every process first, then the threads that read them: the children are forked
        # (and run _end_with_parent) while this process has no other thread.
        for child in self.children:
            child.process = subprocess.Popen(
                ["/bin/sh", "-c", child.command],
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
                preexec_fn=_end_with_parent,
            )
        for child in self.children:
            child.reader = threading.Thread(target=self._forward, args=(child,), daemon=True)
            child.reader.start()
            self.say(child.name, f"started (pid {child.process.pid})")

    def request_stop(self, signum, frame=None):
        name = signal.Signals(signum).name
        if self.stop_requested.is_set():
            waiting = ", ".join(c.name for c in self.children if c.returncode is None)
            self.say("make run", f"{name}: still stopping {waiting}, {self.timeout:.0f} s at most")
            return
        self.stop_reason = name
        self.stop_requested.set()

    def _signal_group(self, child, signum):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signum)

    def stop(self):
        running = [child for child in self.children if child.returncode is None]
        if running:
            self.say(
                "make run",
                f"stopping {', '.join(c.name for c in running)} (a run in progress may "
                f"finish first: at most {self.timeout:.0f} s)",
            )
        for child in running:
            self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.timeout
        for child in self.children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(child.name, f"did not stop within {self.timeout:.0f} s: killed")
                self._signal_group(child, signal.SIGKILL)
                child.process.wait()
            # What the process left in its group (the server the autoreloader started).
            self._signal_group(child, signal.SIGKILL)
            child.reader.join(5)

    def run(self):
        """Start, wait for a stop request or a process that ends, stop all; the exit status."""
        previous = {signum: signal.signal(signum, self.request_stop) for signum in STOP_SIGNALS}
        try:
            self.start()
            ended = None
            while ended is None and not self.stop_requested.wait(0.2):
                ended = next((c for c in self.children if c.returncode is not None), None)
            if ended is not None:
                self.say(ended.name, f"exited by itself (rc={ended.returncode}): stopping the rest")
            self.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        for child in self.children:
            self.say(child.name, f"stopped (rc={child.returncode})")
        failed = [child for child in self.children if child.returncode != 0]
        if ended is None and not failed:
            self.say("make run", f"Stopped ({self.stop_reason}).")
            self.output.write("Stopped.\n")
            self.output.flush()
            return 0
        self.output.write(
            "Stopped: "
            + ", ".join(f"{c.name} exited with status {c.returncode}" for c in failed)
            + ".\n"
        )
        self.output.flush()
        return 1


USAGE = """usage: python -m reportsvc.localrun COMMAND
  remember-databases  record the databases and the address of this `make run`
  address             print the address `make run` serves (http://127.0.0.1:8000 before any)
  serve [PROCFILE]    run the Procfile's processes until stopped (Ctrl-C, SIGTERM)
"""


def main(arguments):
    if arguments == ["remember-databases"]:
        remember_databases()
        remember_address()
    elif arguments == ["address"]:
        print(remembered_address())
    elif arguments[:1] == ["serve"] and len(arguments) <= 2:
        procfile = arguments[1] if len(arguments) == 2 else PROJECT_DIR / "Procfile"
        sys.exit(Supervisor(procfile_processes(procfile)).run())
    else:
        sys.exit(USAGE)


if __name__ == "__main__":
    main(sys.argv[1:])
