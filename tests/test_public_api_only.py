"""The scheduler stands on APScheduler's and django-apscheduler's public API alone.

Their private methods and attributes change without notice between releases, so the
project's code neither overrides nor reads them; and the scheduler shares no module
state with its jobs (they read everything from the database).
"""

import ast
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
LIBRARIES = ("apscheduler", "django_apscheduler")
SCHEDULER_MODULES = ("runs/services/runtime/scheduler.py", "runs/services/runtime/fires.py")
# Module-level calls whose results are immutable (or a logger, which keeps no state of ours).
IMMUTABLE_CALLS = {"getLogger", "timedelta", "frozenset"}


def private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def library_names(tree):
    """Names a module binds to anything from the libraries."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    names.add((alias.asname or alias.name).split(".")[0])
    return names


def base_name(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def private_api_uses(source):
    """Every use of a library's private API in ``source``: (line, what)."""
    tree = ast.parse(source)
    from_library = library_names(tree)
    if not from_library:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            parts = node.module.split(".") + [alias.name for alias in node.names]
            found += [(node.lineno, f"import of {name}") for name in parts if private(name)]
        if isinstance(node, ast.ClassDef):
            if any(base_name(base) in from_library for base in node.bases):
                for item in ast.walk(node):
                    if isinstance(item, ast.FunctionDef) and private(item.name):
                        found.append((item.lineno, f"{node.name} overrides {item.name}"))
                    if isinstance(item, ast.Attribute) and private(item.attr):
                        found.append((item.lineno, f"{node.name} uses self.{item.attr}"))
        elif isinstance(node, ast.Attribute) and private(node.attr):
            # The module's own classes may keep private state of their own (self._x); an
            # attribute of anything else (self.scheduler._thread) may be the library's.
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, f"reads {ast.unparse(node)}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and private(str(node.args[1].value))
        ):
            found.append((node.lineno, f"{node.func.id}(…, {node.args[1].value!r})"))
    return found


def mutable_module_state(source):
    """Module-level names bound to something that can change, and global statements."""
    tree = ast.parse(source)
    found = [
        (node.lineno, f"global {', '.join(node.names)}")
        for node in ast.walk(tree)
        if isinstance(node, ast.Global | ast.Nonlocal)
    ]
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [target.id for target in targets if isinstance(target, ast.Name)]
            if not immutable(node.value) or any(
                name != name.upper() for name in names if name != "logger"
            ):
                found.append((node.lineno, f"module state {', '.join(names)}"))
    return found


def immutable(value):
    if isinstance(value, ast.Constant):
        return True
    if isinstance(value, ast.Tuple):
        return all(immutable(item) for item in value.elts)
    if isinstance(value, ast.BinOp | ast.UnaryOp):
        return all(
            immutable(part) for part in ast.iter_child_nodes(value) if isinstance(part, ast.expr)
        )
    if isinstance(value, ast.Call):
        function = value.func.attr if isinstance(value.func, ast.Attribute) else value.func.id
        return function in IMMUTABLE_CALLS
    return False


def project_sources():
    for folder in ("runs", "reports"):
        for path in sorted((PROJECT / folder).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path.relative_to(PROJECT), path.read_text()


def test_no_private_apscheduler_api_in_runs_and_reports():
    uses = {
        str(path): found
        for path, source in project_sources()
        if (found := private_api_uses(source))
    }
    assert uses == {}


def test_the_scheduler_modules_keep_no_state_between_jobs():
    states = {
        name: found
        for name in SCHEDULER_MODULES
        if (found := mutable_module_state((PROJECT / name).read_text()))
    }
    assert states == {}
    global_statements = {
        str(path): [use for use in mutable_module_state(source) if use[1].startswith("global")]
        for path, source in project_sources()
    }
    assert {path: uses for path, uses in global_statements.items() if uses} == {}


def test_the_checks_catch_what_they_look_for():
    """The patterns the scheduler once used, each caught."""
    old = textwrap.dedent(
        """
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from django_apscheduler.jobstores import DjangoJobStore

        _active_recorder = None
        PENDING = {}

        def fire_report(report_id):
            global _active_recorder

        class FireTimeExecutor(ThreadPoolExecutor):
            def _do_submit_job(self, job, run_times):
                super()._do_submit_job(job, run_times)

        class Store(DjangoJobStore):
            def flush(self):
                self._scheduler.add_listener(print)

        class ReportScheduler:
            def is_alive(self):
                thread = getattr(self.scheduler, "_thread", None)
                return self.scheduler._thread.is_alive()
        """
    )
    uses = [what for _, what in private_api_uses(old)]
    assert "FireTimeExecutor overrides _do_submit_job" in uses
    assert "Store uses self._scheduler" in uses
    assert "getattr(…, '_thread')" in uses
    assert "reads self.scheduler._thread" in uses
    states = [what for _, what in mutable_module_state(old)]
    assert states == [
        "global _active_recorder",
        "module state _active_recorder",
        "module state PENDING",
    ]
