#!/usr/bin/env python
"""Django's command-line utility for reportsvc."""

import os
import signal
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    try:
        from django.core.exceptions import ImproperlyConfigured
        from django.core.management import execute_from_command_line
    except ImportError as error:
        sys.exit(
            f"manage.py: {error} (for {sys.executable}). Use the project's virtualenv, "
            "which `make run` creates: .venv/bin/python manage.py …"
        )

    from reportsvc.localrun import use_database_of_make_run

    use_database_of_make_run()
    if sys.argv[1:2] == ["runserver"]:
        # `make run` (reportsvc.localrun) stops the development server with SIGTERM: a
        # normal stop.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A configuration mistake (SECRET_KEY missing, a bad DATABASE_URL, ...) is one
        # line for the person at the terminal, not a traceback.
        sys.exit(f"manage.py: {error}")


if __name__ == "__main__":
    main()
