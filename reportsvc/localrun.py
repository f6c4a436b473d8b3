"""Conveniences for the local `make run` set-up, so what it prints can be pasted as is.

- ``make run`` remembers the databases it was started with (``DATABASE_URL`` and
  ``REPORTING_DATABASE_URL*`` from its environment) in ``var/make-run.env`` (under
  ``REPORTSVC_VAR_DIR`` when that is in the environment); manage.py uses them when
  ``DATABASE_URL`` is not set, so ``.venv/bin/python manage.py …`` in another terminal
  reaches the database the service is using. It also notes its address in
  ``var/make-run.address``: ``python -m reportsvc.localrun address`` prints it, so the
  documentation's commands reach the server at its real port.
- The first admin password is also written to ``<var>/admin-password`` (mode 0600).

Importable before Django's settings are loaded (manage.py reads the file first).
"""

import os
import shlex
import sys
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


def write_admin_password(password, var_dir):
    """Keep the generated admin password where only this user can read it."""
    path = Path(var_dir) / ADMIN_PASSWORD_FILE_NAME
    _write_private(path, password + "\n")
    return path


def admin_password_file(var_dir):
    path = Path(var_dir) / ADMIN_PASSWORD_FILE_NAME
    return path if path.is_file() else None


USAGE = """usage: python -m reportsvc.localrun COMMAND
  remember-databases  record the databases and the address of this `make run`
  address             print the address `make run` serves (http://127.0.0.1:8000 before any)
"""


def main(arguments):
    if arguments == ["remember-databases"]:
        remember_databases()
        remember_address()
    elif arguments == ["address"]:
        print(remembered_address())
    else:
        sys.exit(USAGE)


if __name__ == "__main__":
    main(sys.argv[1:])
