"""The two apps' web layers do not import each other; data sources import no app.

``runs`` builds on ``reports``' models and services; ``reports``' admin and API show
runs through ``runs``' models, selectors, services and serializers. What both web
layers need (permissions, schema pieces, renderers, links, display helpers) lives in
``reportsvc.web``, which imports neither app's web modules.

Imports run one way: web layers -> runs -> reports -> datasources. ``datasources`` (the
data-source registry, the backends, parameter types) imports none of the apps, nor the
shared web layer; the apps import it.
"""

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
APPS = ("access", "reports", "runs")
WEB_MODULES = {
    "reports": ("reports.admin", "reports.api", "reports.serializers", "reports.views"),
    "runs": ("runs.admin", "runs.api", "runs.templatetags", "runs.views"),
}


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def imports_of(package, forbidden):
    """``(file, module)`` for each import under ``package`` of a module in ``forbidden``."""
    found = []
    for path in sorted((PROJECT / package).rglob("*.py")):
        for module in imported_modules(path):
            if any(module == name or module.startswith(f"{name}.") for name in forbidden):
                found.append((str(path.relative_to(PROJECT)), module))
    return found


def test_runs_does_not_import_the_web_layer_of_reports():
    assert imports_of("runs", WEB_MODULES["reports"]) == []


def test_reports_does_not_import_the_web_layer_of_runs():
    assert imports_of("reports", WEB_MODULES["runs"]) == []


def test_the_shared_web_layer_imports_no_web_module_of_either_app():
    assert imports_of("reportsvc/web", WEB_MODULES["reports"] + WEB_MODULES["runs"]) == []


def test_datasources_imports_no_app_and_no_web_layer():
    assert imports_of("datasources", (*APPS, "reportsvc.web")) == []


def test_the_apps_build_on_datasources():
    assert imports_of("reports", ("datasources",)) != []
    assert imports_of("runs", ("datasources",)) != []


def test_the_check_sees_an_import_across(tmp_path, monkeypatch):
    package = tmp_path / "runs"
    package.mkdir()
    (package / "admin.py").write_text("from reports.admin import ReportAdmin\n")
    monkeypatch.setattr(f"{__name__}.PROJECT", tmp_path)
    assert imports_of("runs", WEB_MODULES["reports"]) == [
        ("runs/admin.py", "reports.admin"),
        ("runs/admin.py", "reports.admin.ReportAdmin"),
    ]


def test_the_check_sees_datasources_importing_an_app(tmp_path, monkeypatch):
    package = tmp_path / "datasources" / "backends"
    package.mkdir(parents=True)
    (package / "sqlite.py").write_text("import runs.services.formats\n")
    monkeypatch.setattr(f"{__name__}.PROJECT", tmp_path)
    assert imports_of("datasources", APPS) == [
        ("datasources/backends/sqlite.py", "runs.services.formats")
    ]
