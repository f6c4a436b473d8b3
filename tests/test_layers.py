"""Every module of the project sits in one layer, and imports run one way: down.

The layers, top to bottom (``LAYERS``):

- the entry points: the apps' web layers (admin, API, views, serializers, what the
  API's endpoints share), their management commands, app configs and signal receivers,
  the URLs;
- ``reportsvc.web``, the web layer both apps share (permissions, schema pieces,
  renderers, links, display helpers, the API's error mapping);
- ``runs``, in four layers of its own, top to bottom: the worker's runtime
  (``runs.services.runtime``: worker, scheduler, leader's passes, runner); the notifier
  (``runs.services.notifications``); the runs' domain (``runs.services.domain``: queue,
  transitions, cancelling, backfills, alerting decisions); their infrastructure
  (``runs.services.infrastructure``: storage, export, preview, metrics); then the
  runs' models, selectors and naming;
- ``reports.services``: what is done with reports (validation, statements, schedules,
  history, demo data, the reporting logins);
- ``reports`` and ``access``: the reports' models and what they are made of
  (parameters, cron, targets, zones, history records); API tokens;
- the plugins, which know no app: the output formats (``runs.services.formats``) and
  the notification channels (``runs.services.notifications.channels``), what they
  need of a run handed to them;
- ``datasources``: the data-source registry, the backends, parameter types;
- the project's plain helpers (moments, text, networks, storage settings).

A module imports from its own layer and those below it, never from one above: no
exceptions. The two
apps' pages (admin, API views) do not import each other's either, and only the top
two layers use the web frameworks (DRF, the admin, Django's HTTP and templates).
"""

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("access", "datasources", "reports", "reportsvc", "runs")
APPS = ("access", "reports", "runs")

ENTRY_POINTS = "entry points"
SHARED_WEB = "shared web"
# Top to bottom. A module belongs to the layer of the longest prefix naming it.
LAYERS = (
    (
        ENTRY_POINTS,
        (
            *(f"{app}.{name}" for app in APPS for name in ("admin", "apps", "management")),
            "reports.checks",  # system checks the app config registers
            "runs.signals",  # receivers the app config connects
            *(f"{app}.{name}" for app in APPS for name in ("api", "serializers", "views")),
            "access.authentication",
            "reports.forms",
            "reports.throttling",
            "runs.downloads",
            "runs.run_requests",
            "runs.templatetags",
            *(f"reportsvc.{name}" for name in ("asgi", "middleware", "openapi", "settings")),
            *(f"reportsvc.{name}" for name in ("urls", "views", "wsgi")),
        ),
    ),
    (SHARED_WEB, ("reportsvc.web",)),
    ("runs runtime", ("runs.services.runtime",)),
    ("runs notifier", ("runs.services.notifications",)),
    ("runs domain", ("runs.services.domain",)),
    ("runs infrastructure", ("runs.services.infrastructure",)),
    ("runs models and selectors", ("runs",)),
    ("reports services", ("reports.services",)),
    ("reports and access", ("reports", "access")),
    ("plugins", ("runs.services.formats", "runs.services.notifications.channels")),
    ("data sources", ("datasources",)),
    ("plain helpers", ("reportsvc",)),
)
DEPTH = {name: depth for depth, (name, _) in enumerate(LAYERS)}
PAGES = {
    "reports": ("reports.admin", "reports.api"),
    "runs": ("runs.admin", "runs.api", "runs.templatetags", "runs.views"),
}
WEB_FRAMEWORKS = (
    "rest_framework",
    "drf_spectacular",
    "django_filters",
    "django.contrib.admin",
    "django.http",
    "django.shortcuts",
    "django.template",
)


def _named(module, prefix):
    return module == prefix or module.startswith(f"{prefix}.")


def layer_of(module):
    """The layer of a project module (or of a name imported from one); None outside
    the project."""
    matches = [
        (len(prefix), layer)
        for layer, prefixes in LAYERS
        for prefix in prefixes
        if _named(module, prefix)
    ]
    return max(matches)[1] if matches else None


def project_modules(root=None):
    """``{dotted name: path}`` of every module of the project's packages."""
    root = root or PROJECT
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.relative_to(root).parts:
                continue  # history: they import what the models were
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


# The HTML email is a Django template: the escaping every page gets.
TEMPLATE_USERS = ("runs.services.notifications.channels.email",)


def upward_imports(root=None):
    """``(module, its layer, imported, that layer)`` for each import of a higher layer."""
    found = []
    for module, path in project_modules(root).items():
        own = layer_of(module)
        for imported in imported_modules(path):
            theirs = layer_of(imported)
            if theirs is not None and DEPTH[theirs] < DEPTH[own]:
                found.append((module, own, imported, theirs))
    return found


def imports_of(package, forbidden):
    """``(file, module)`` for each import under ``package`` of a module in ``forbidden``."""
    found = []
    for path in sorted((PROJECT / package).rglob("*.py")):
        for module in imported_modules(path):
            if any(_named(module, name) for name in forbidden):
                found.append((str(path.relative_to(PROJECT)), module))
    return found


def test_every_module_of_the_project_has_a_layer():
    modules = project_modules()
    assert {"reports.models", "runs.services.domain.queue", "reportsvc.web.errors"} <= set(modules)
    assert [module for module in modules if layer_of(module) is None] == []


def test_imports_run_one_way_down_the_layers():
    assert upward_imports() == []


def test_only_the_web_layers_use_the_web_frameworks():
    web = (DEPTH[ENTRY_POINTS], DEPTH[SHARED_WEB])
    found = [
        (module, imported)
        for module, path in project_modules().items()
        if DEPTH[layer_of(module)] not in web
        for imported in imported_modules(path)
        if any(_named(imported, framework) for framework in WEB_FRAMEWORKS)
        if not (module in TEMPLATE_USERS and _named(imported, "django.template"))
    ]
    assert found == []


def test_runs_does_not_import_the_pages_of_reports():
    assert imports_of("runs", PAGES["reports"]) == []


def test_reports_does_not_import_the_pages_of_runs():
    assert imports_of("reports", PAGES["runs"]) == []


def test_datasources_imports_no_app_and_no_web_layer():
    assert imports_of("datasources", (*APPS, "reportsvc.web")) == []


def test_the_apps_build_on_datasources():
    assert imports_of("reports", ("datasources",)) != []
    assert imports_of("runs", ("datasources",)) != []


def test_the_check_sees_an_import_up_the_layers(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "reports" / "models.py").write_text(
        "from runs.services.domain.queue import claim_runs\n"
    )
    (tmp_path / "runs" / "naming.py").write_text("from runs.services.formats import get_format\n")
    channels = tmp_path / "runs" / "services" / "notifications" / "channels"
    channels.mkdir(parents=True)
    (channels / "slack.py").write_text("import reports.targets\nimport runs.naming\n")
    domain = tmp_path / "runs" / "services" / "domain"
    domain.mkdir()
    (domain / "alerting.py").write_text("from runs.services.runtime.leadership import fence\n")
    models = "runs models and selectors"
    assert upward_imports(tmp_path) == [
        ("reports.models", "reports and access", "runs.services.domain.queue", "runs domain"),
        (
            "reports.models",
            "reports and access",
            "runs.services.domain.queue.claim_runs",
            "runs domain",
        ),
        (
            "runs.services.domain.alerting",
            "runs domain",
            "runs.services.runtime.leadership",
            "runs runtime",
        ),
        (
            "runs.services.domain.alerting",
            "runs domain",
            "runs.services.runtime.leadership.fence",
            "runs runtime",
        ),
        (
            "runs.services.notifications.channels.slack",
            "plugins",
            "reports.targets",
            "reports and access",
        ),
        ("runs.services.notifications.channels.slack", "plugins", "runs.naming", models),
    ]


def test_the_channels_sit_with_the_formats_below_the_apps_and_the_notifier_in_runs():
    assert layer_of("runs.services.notifications.channels.email") == "plugins"
    assert layer_of("runs.services.formats.xlsx") == "plugins"
    assert layer_of("runs.services.notifications.notifier") == "runs notifier"
    assert DEPTH["plugins"] > DEPTH["reports and access"]


def test_runs_is_layered_runtime_notifier_domain_infrastructure_then_models():
    order = [
        layer_of(module)
        for module in (
            "runs.services.runtime.worker",
            "runs.services.notifications.notifier",
            "runs.services.domain.queue",
            "runs.services.infrastructure.output_storage",
            "runs.models",
            "runs.selectors",
        )
    ]
    assert [DEPTH[layer] for layer in order] == sorted(DEPTH[layer] for layer in order)
    assert len(set(order)) == 5


def test_the_check_sees_an_import_of_the_other_app_s_pages(tmp_path, monkeypatch):
    package = tmp_path / "runs"
    package.mkdir()
    (package / "admin.py").write_text("from reports.admin import ReportAdmin\n")
    monkeypatch.setattr(f"{__name__}.PROJECT", tmp_path)
    assert imports_of("runs", PAGES["reports"]) == [
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
