import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def settings_in_a_fresh_process(expression, **environment):
    """Evaluate ``expression`` on freshly loaded settings with only ``environment`` set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DATABASE_URL", "REPORTING_DATABASE_URL", "SECRET_KEY", "DEBUG", "OUTPUTS_DIR")
        )
    }
    env.update(environment, DJANGO_SETTINGS_MODULE="reportsvc.settings")
    return subprocess.run(
        [sys.executable, "-c", f"from django.conf import settings; print({expression})"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_secret_key_production_settings_refuse_to_load():
    result = settings_in_a_fresh_process("settings.DEBUG")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_defaults_are_sqlite_under_var_and_outputs_under_var_outputs():
    result = settings_in_a_fresh_process(
        "(settings.DATABASES['default']['NAME'], settings.MEDIA_ROOT, "
        "sorted(settings.REPORT_DATA_SOURCES))",
        DEBUG="1",
    )
    assert result.returncode == 0, result.stderr
    var = PROJECT_DIR / "var"
    assert result.stdout.strip() == str(
        (str(var / "reportsvc.sqlite3"), str(var / "outputs"), ["default"])
    )


def test_extra_data_sources_come_from_the_environment():
    result = settings_in_a_fresh_process(
        "settings.REPORT_DATA_SOURCES",
        SECRET_KEY="x",
        REPORTING_DATABASE_URL_WAREHOUSE="postgres://reader@dwh:5432/dwh",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        {"default": "reporting_default", "warehouse": "reporting_warehouse"}
    )


def test_webhooks_are_kept_from_loopback_link_local_unspecified_and_multicast_by_default():
    result = settings_in_a_fresh_process("settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS", SECRET_KEY="x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        [
            "127.0.0.0/8",
            "::1/128",
            "169.254.0.0/16",
            "fe80::/10",
            "0.0.0.0/8",
            "::/128",
            "224.0.0.0/4",
            "ff00::/8",
        ]
    )


def test_blocked_webhook_networks_can_be_emptied_and_a_bad_one_is_named():
    result = settings_in_a_fresh_process(
        "settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS",
        SECRET_KEY="x",
        NOTIFY_WEBHOOK_BLOCKED_NETWORKS="",
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
    result = settings_in_a_fresh_process(
        "settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS",
        SECRET_KEY="x",
        NOTIFY_WEBHOOK_BLOCKED_NETWORKS="10.0.0.1/8, 169.254.0.0/16,intranet",
    )
    assert result.returncode != 0
    assert (
        "NOTIFY_WEBHOOK_BLOCKED_NETWORKS: 'intranet' is not a network in CIDR notation "
        "(e.g. 127.0.0.0/8, fe80::/10)." in result.stderr
    )


S3_ENVIRONMENT = {
    "SECRET_KEY": "x",
    "OUTPUTS_S3_BUCKET": "reports",
    "AWS_S3_ENDPOINT_URL": "http://minio:9000",
    "AWS_S3_ADDRESSING_STYLE": "path",
}


def test_without_a_bucket_outputs_stay_on_the_filesystem():
    result = settings_in_a_fresh_process("settings.STORAGES['default']", SECRET_KEY="x")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str({"BACKEND": "django.core.files.storage.FileSystemStorage"})


def test_a_bucket_puts_outputs_in_private_objects_with_short_lived_urls():
    result = settings_in_a_fresh_process(
        "__import__('json').dumps([settings.STORAGES['default'], "
        "settings.OUTPUTS_S3_PUBLIC_ENDPOINT_URL])",
        **S3_ENVIRONMENT,
        OUTPUTS_S3_PREFIX="/reportsvc/outputs/",
    )
    assert result.returncode == 0, result.stderr
    storage, public_endpoint = json.loads(result.stdout)
    assert storage["BACKEND"] == "reportsvc.s3_storage.OutputS3Storage"
    options = storage["OPTIONS"]
    assert options["bucket_name"] == "reports"
    assert options["location"] == "reportsvc/outputs"
    assert options["endpoint_url"] == public_endpoint == "http://minio:9000"
    assert options["addressing_style"] == "path"
    # No ACL sent (objects stay the bucket owner's alone), every URL presigned, 60 s.
    assert options["default_acl"] is None
    assert options["querystring_auth"] is True
    assert options["querystring_expire"] == 60


def test_storage_requests_have_bounded_waits_by_default_and_as_set():
    expression = (
        "[settings.STORAGES['default']['OPTIONS'][name] for name in "
        "('connect_timeout', 'read_timeout', 'max_attempts')]"
    )
    defaults = settings_in_a_fresh_process(expression, **S3_ENVIRONMENT)
    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.strip() == "[5.0, 30.0, 3]"
    chosen = settings_in_a_fresh_process(
        expression,
        **S3_ENVIRONMENT,
        OUTPUTS_S3_CONNECT_TIMEOUT_SECONDS="1.5",
        OUTPUTS_S3_READ_TIMEOUT_SECONDS="10",
        OUTPUTS_S3_MAX_ATTEMPTS="5",
    )
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == "[1.5, 10.0, 5]"


def test_the_public_endpoint_is_where_clients_reach_the_storage():
    result = settings_in_a_fresh_process(
        "settings.OUTPUTS_S3_PUBLIC_ENDPOINT_URL",
        **S3_ENVIRONMENT,
        OUTPUTS_S3_PUBLIC_ENDPOINT_URL="https://files.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "https://files.example.com"


def test_bad_object_storage_settings_are_refused_with_the_reason():
    for variable, value, message in [
        (
            "AWS_S3_ADDRESSING_STYLE",
            "paths",
            "AWS_S3_ADDRESSING_STYLE must be one of auto, path, virtual (path for MinIO), "
            "not 'paths'.",
        ),
        (
            "OUTPUTS_S3_URL_EXPIRE_SECONDS",
            "0",
            "OUTPUTS_S3_URL_EXPIRE_SECONDS must be between 1 and 604800 (7 days, the most a "
            "presigned URL allows), not 0.",
        ),
        (
            "OUTPUTS_S3_URL_EXPIRE_SECONDS",
            "604801",
            "OUTPUTS_S3_URL_EXPIRE_SECONDS must be between 1 and 604800 (7 days, the most a "
            "presigned URL allows), not 604801.",
        ),
        ("OUTPUTS_S3_READ_TIMEOUT_SECONDS", "0", "OUTPUTS_S3_READ_TIMEOUT_SECONDS must be above 0"),
        ("OUTPUTS_S3_MAX_ATTEMPTS", "0", "OUTPUTS_S3_MAX_ATTEMPTS must be above 0, not 0."),
        ("OUTPUTS_S3_WEB_CONCURRENCY", "-1", "OUTPUTS_S3_WEB_CONCURRENCY must be above 0"),
    ]:
        result = settings_in_a_fresh_process(
            "settings.STORAGES", **{**S3_ENVIRONMENT, variable: value}
        )
        assert result.returncode != 0
        assert message in result.stderr, result.stderr


def test_service_database_connections_notice_a_vanished_peer_unless_the_url_says_otherwise():
    result = settings_in_a_fresh_process(
        "settings.DATABASES['default']['OPTIONS']",
        SECRET_KEY="x",
        DATABASE_URL="postgres://svc@db:5432/svc?keepalives_idle=30&options=-c%20work_mem%3D8MB",
    )
    assert result.returncode == 0, result.stderr
    options = ast.literal_eval(result.stdout)
    assert (options["keepalives"], options["keepalives_interval"]) == (1, 2)
    assert (options["tcp_user_timeout"], options["connect_timeout"]) == (10_000, 10)
    assert str(options["keepalives_idle"]) == "30"  # the URL's own
    # The server's side of the session: ours first, the URL's later (and so winning).
    assert options["options"] == (
        "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
        "-c tcp_user_timeout=10000 -c work_mem=8MB"
    )


def test_a_lease_too_short_to_renew_is_refused():
    result = settings_in_a_fresh_process(
        "settings.SCHEDULE_LEADER_LEASE_SECONDS", SECRET_KEY="x", SCHEDULE_LEADER_LEASE_SECONDS="2"
    )
    assert result.returncode != 0
    assert "SCHEDULE_LEADER_LEASE_SECONDS must be at least 3." in result.stderr


def test_the_settings_import_no_app_code():
    """Loading the settings imports none of the apps (nor the web layer they share): an
    app's module may read settings when it is imported. The data-source registry, which
    turns the environment into DATABASES, is no app."""
    result = settings_in_a_fresh_process(
        "sorted(__import__('sys').modules) if settings.DEBUG else None", DEBUG="1"
    )
    assert result.returncode == 0, result.stderr
    modules = ast.literal_eval(result.stdout.strip())
    assert "reportsvc.settings" in modules
    apps = ("access", "reports", "runs", "reportsvc.web")
    assert [name for name in modules if name.startswith(tuple(f"{app}." for app in apps))] == []
    assert [name for name in modules if name in apps] == []
