"""Outside the data-source backends, no code knows a data source's vendor.

Everything that depends on a data source's database vendor lives in
``datasources/backends/`` (one module per vendor); the rest asks the backend of the
connection. This scan finds what would bring a vendor branch back anywhere else under
``reports/``, ``runs/``, ``reportsvc/`` and ``datasources/``:

- reading a ``.vendor`` (``if connection.vendor == …``, ``EXPORTERS[connection.vendor]``);
- a string naming a vendor, its URL scheme or its Django engine (``"postgresql"``,
  ``"sqlite:///…"``, ``ENGINE.endswith("sqlite3")``), docstrings aside;
- importing a vendor's driver or parser (psycopg, pglast, sqlite3, MySQLdb, …).

The service's own database keeps its vendor choices where they are: those places are
listed in ALLOWED, each with its reason, and an entry that no longer matches anything
fails too, so the list stays exact.
"""

import ast
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
SCANNED = ("reports", "runs", "reportsvc", "datasources")
BACKENDS = "datasources/backends"
VENDOR_WORDS = re.compile(r"\b(postgres|postgresql|pgsql|sqlite|sqlite3|mysql|mariadb)\b")
DRIVERS = ("psycopg", "psycopg2", "pglast", "sqlite3", "MySQLdb", "pymysql", "mysql")

# (file, scope) -> why the service's own database may branch there. A scope is the
# enclosing function (Class.method), or the name a module-level statement assigns.
ALLOWED = {
    ("runs/services/domain/transitions.py", "_start_next_run_sql"): "claiming runs: SKIP LOCKED",
    ("runs/services/domain/transitions.py", "start_queued_runs"): "claiming runs: SKIP LOCKED",
    ("reports/services/logins.py", "take_login"): "the login lease's row: SKIP LOCKED",
    ("runs/services/runtime/leadership.py", "_limit_session"): "the service session's timeouts",
    ("runs/services/runtime/leadership.py", "refuse_a_second_sqlite_worker"): "one SQLite worker",
    ("runs/services/runtime/worker.py", "Worker._work_until_stopped"): "the start line names it",
    ("reportsvc/settings.py", "DEFAULT_DATABASE_URL"): "the service's default database",
    ("reportsvc/settings.py", "_service_database"): "the service database's options",
    ("reportsvc/text.py", "read_sqlite_text_leniently"): "the service's SQLite text",
    (
        "runs/services/infrastructure/metrics.py",
        "_report_rows",
    ): "/metrics' SQL, compiled per service database",
    ("runs/selectors.py", "reports_with_last_run"): "the reports list's SQL, compiled per database",
    ("runs/selectors.py", "_read_moments_natively"): "the reports list's moments, psycopg's loader",
}


def _is_bare_string(node, parents):
    parent = parents.get(node)
    return isinstance(parent, ast.Expr)  # a docstring or a string statement


def _scope(node, parents):
    names, current = [], node
    while current in parents:
        current = parents[current]
        if isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(current.name)
        elif isinstance(current, (ast.Assign, ast.AnnAssign)) and isinstance(
            parents.get(current), ast.Module
        ):
            targets = current.targets if isinstance(current, ast.Assign) else [current.target]
            names.append(",".join(ast.unparse(target) for target in targets))
    return ".".join(reversed(names)) or "<module>"


def vendor_knowledge(path):
    """``(scope, what)`` for each place in the file at ``path`` that knows a vendor."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Attribute) and node.attr == "vendor":
            what = f"reads {ast.unparse(node)}"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and not _is_bare_string(node, parents)
            and VENDOR_WORDS.search(node.value)
        ):
            what = f"names {node.value!r}"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            drivers = [m for m in modules if m.split(".")[0] in DRIVERS]
            drivers += [
                m
                for m in modules
                if m.startswith("django.db.backends.") and VENDOR_WORDS.search(m.split(".")[3])
            ]
            if drivers:
                what = f"imports {', '.join(drivers)}"
        if what:
            found.append((_scope(node, parents), what))
    return found


def vendor_branches_outside_backends():
    """``(file, scope, what)`` outside the backends, the allowed places aside; and the
    allowed places that were found."""
    branches, used = [], set()
    for package in SCANNED:
        for path in sorted((PROJECT / package).rglob("*.py")):
            relative = path.relative_to(PROJECT).as_posix()
            if relative.startswith(f"{BACKENDS}/") or "/migrations/" in relative:
                continue
            for scope, what in vendor_knowledge(path):
                if (relative, scope) in ALLOWED:
                    used.add((relative, scope))
                else:
                    branches.append((relative, scope, what))
    return branches, used


def test_no_code_outside_the_backends_branches_on_a_data_sources_vendor():
    branches, _ = vendor_branches_outside_backends()
    assert branches == []


def test_every_allowed_place_still_branches_on_the_service_databases_vendor():
    _, used = vendor_branches_outside_backends()
    assert sorted(set(ALLOWED) - used) == []


def test_the_scan_catches_a_vendor_branch(tmp_path, monkeypatch):
    services = tmp_path / "runs" / "services"
    for package in ("infrastructure", "domain"):
        (services / package).mkdir(parents=True)
    (services / "infrastructure" / "exporter.py").write_text(
        '"""Exports, by vendor: postgresql and sqlite (a docstring may say so)."""\n'
        "import psycopg\n"
        "from pglast import parse_sql\n"
        "EXPORTERS = {'postgresql': 1, 'sqlite': 2}\n"
        "def export(connection):\n"
        "    if connection.vendor == 'postgresql':\n"
        "        return EXPORTERS[connection.vendor]\n"
        "    return connection.settings_dict['ENGINE'].endswith('sqlite3')\n"
        "from django.db.backends.signals import connection_created\n"
        "from django.db.backends.postgresql.base import DatabaseWrapper\n"
    )
    # A place allowed in one file is not allowed in another.
    (services / "domain" / "queue.py").write_text(
        "def take_login(connection):\n    return connection.vendor\n"
    )
    backends = tmp_path / "datasources" / "backends"
    backends.mkdir(parents=True)
    (backends / "postgresql.py").write_text("import psycopg\nVENDOR = 'postgresql'\n")
    monkeypatch.setattr(f"{__name__}.PROJECT", tmp_path)
    branches, used = vendor_branches_outside_backends()
    assert sorted(branches) == sorted(
        [
            ("runs/services/infrastructure/exporter.py", "<module>", "imports psycopg"),
            ("runs/services/infrastructure/exporter.py", "<module>", "imports pglast"),
            ("runs/services/infrastructure/exporter.py", "EXPORTERS", "names 'postgresql'"),
            ("runs/services/infrastructure/exporter.py", "EXPORTERS", "names 'sqlite'"),
            ("runs/services/infrastructure/exporter.py", "export", "reads connection.vendor"),
            ("runs/services/infrastructure/exporter.py", "export", "names 'postgresql'"),
            ("runs/services/infrastructure/exporter.py", "export", "reads connection.vendor"),
            ("runs/services/infrastructure/exporter.py", "export", "names 'sqlite3'"),
            (
                "runs/services/infrastructure/exporter.py",
                "<module>",
                "imports django.db.backends.postgresql.base",
            ),
            ("runs/services/domain/queue.py", "take_login", "reads connection.vendor"),
        ]
    )
    assert used == set()
