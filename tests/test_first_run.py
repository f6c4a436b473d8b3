"""manage.py at the terminal: configuration mistakes are one line, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CLEARED = ("DATABASE_URL", "REPORTING_DATABASE_URL", "SECRET_KEY", "DEBUG", "OUTPUTS_DIR")
CLEARED += ("PUBLIC_BASE_URL", "HOST", "PORT", "REPORTSVC_VAR_DIR", "MAKEFLAGS", "MAKELEVEL")


def clean_environment(**values):
    environment = {key: value for key, value in os.environ.items() if not key.startswith(CLEARED)}
    environment.update(PYTHONUNBUFFERED="1", **values)
    return environment


# --- manage.py's own errors ------------------------------------------------------------


def manage(*arguments, environment=None, python=(sys.executable,), **kwargs):
    return subprocess.run(
        [*python, "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=environment or clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
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
