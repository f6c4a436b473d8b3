"""Make docs/admin-reports.png anew: the admin's reports list over the demo.

A demo of its own (a SQLite database and outputs in a temporary folder), each demo
report run once from the command line so the list shows last runs, the development
server on a free port, then the system Chromium (Playwright) logs in and takes the
picture at 1400 x 900. `make screenshot` runs it; tests/test_docs.py runs it into a
temporary file so the script keeps working.

    .venv/bin/python tools/screenshot.py [--output PATH] [--width 1400] [--height 900]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
DEFAULT_OUTPUT = PROJECT_DIR / "docs" / "admin-reports.png"
DEMO_REPORTS = (
    "daily-revenue",
    "daily-revenue-by-currency",
    "new-customers-by-country",
    "refunds-yesterday",
    "top-customers-this-week",
)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo_environment(folder):
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "REPORTING_DATABASE_", "OUTPUTS_", "SECRET_KEY"))
    }
    environment.update(
        DEBUG="1",
        REPORTSVC_VAR_DIR=str(folder),
        DATABASE_URL=f"sqlite:///{folder / 'screenshot.sqlite3'}",
        EMAIL_URL="dummymail://",  # the demo's alerts go nowhere
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return environment


def manage(environment, *arguments):
    subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=environment,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def wait_until_served(url, server, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the development server did not answer at {url}") from None
            time.sleep(0.2)


def take(output, width, height):
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="reportsvc-screenshot-") as folder:
        folder = Path(folder)
        environment = demo_environment(folder)
        manage(environment, "migrate", "--noinput")
        manage(environment, "seed_demo")
        (saved,) = folder.glob("admin-password-*")  # the demo database's own file
        password = saved.read_text().strip()
        # Each demo report once, in one process: the list then shows last runs and rows.
        runs = "".join(f"; call_command('runreport', {slug!r})" for slug in DEMO_REPORTS)
        manage(environment, "shell", "-c", "from django.core.management import call_command" + runs)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=PROJECT_DIR,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_served(f"{base}/healthz?scope=web", server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(f"{base}/admin/login/")
                page.fill("#id_username", "admin")
                page.fill("#id_password", password)
                page.click("input[type=submit]")
                page.wait_for_url(f"{base}/admin/")
                page.goto(f"{base}/admin/reports/report/")
                page.screenshot(path=str(output))
                browser.close()
        finally:
            server.terminate()
            server.wait(30)
    return output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    arguments = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is not installed (apt-get install chromium)")
    print(take(arguments.output, arguments.width, arguments.height))


if __name__ == "__main__":
    main()
