"""API tokens kept as digests and shown once."""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection

from access.models import ApiToken
from access.services.tokens import create_token, digest_of
from reports.models import Report
from tests.api_helpers import client_for, make_user, token_key

PROJECT_DIR = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


@pytest.fixture
def report():
    return Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")


def api_get(key, address="203.0.113.7", path="/api/reports/", **headers):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get(path, REMOTE_ADDR=address, **headers)


# --- tokens kept as digests, keys shown once -------------------------------------------


def test_a_token_keeps_only_the_digest_of_its_key_and_the_key_works(report):
    viewer = make_user("viewer", "view")
    token, key = create_token(viewer, "dashboard")
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    assert token.digest == hashlib.sha256(key.encode()).hexdigest() == digest_of(key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM authtoken_token")
        stored = cursor.fetchall()
    assert len(stored) == 1 and key not in repr(stored)
    assert api_get(key).status_code == 200
    assert create_token(viewer)[1] != key  # each token its own key


INVALID = "Invalid token."
NOT_ASCII = "Invalid token header. Token string should not contain invalid characters."


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        ("0" * 40, INVALID),
        ("x", INVALID),
        ("{digest}", INVALID),  # the digest is no key
        ("{key}0", INVALID),
        ("{key_upper}", INVALID),
        ("é" * 40, NOT_ASCII),
    ],
)
def test_anything_but_the_key_itself_is_refused(report, wrong, message):
    token, key = create_token(make_user("viewer", "view"))
    wrong = wrong.format(digest=token.digest, key=key, key_upper=key.upper())
    response = api_get(wrong)
    assert response.status_code == 401
    assert response.json() == {"detail": message}
    assert response["WWW-Authenticate"] == "Token"


def test_a_token_of_an_inactive_user_is_refused(report):
    user = make_user("leaver", "view")
    key = token_key(user)
    user.is_active = False
    user.save()
    response = api_get(key)
    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted."}


def test_createapitoken_prints_the_key_alone_and_only_once(report):
    make_user("integration", "view")
    out, err = io.StringIO(), io.StringIO()
    call_command("createapitoken", "integration", "--name", "nightly ETL", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert re.fullmatch(r"[0-9a-f]{40}", key), out.getvalue()
    assert "shown only this once" in err.getvalue() and key not in err.getvalue()
    token = ApiToken.objects.get()
    assert (token.name, token.user.username, token.digest) == (
        "nightly ETL",
        "integration",
        digest_of(key),
    )
    assert api_get(key).status_code == 200


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nobody"], "There is no user 'nobody'."),
        (["integration", "--name", "n" * 101], "--name is 101 characters long; at most 100."),
        (["integration", "--name", "bad\udcffbyte"], "--name is not valid UTF-8 text."),
        (["in\udcfftegration"], "USERNAME is not valid UTF-8 text."),
        (["retired"], "The user 'retired' is inactive: its tokens would not work."),
    ],
)
def test_createapitoken_refuses_with_a_message_and_makes_nothing(arguments, message):
    make_user("integration")
    retired = make_user("retired")
    retired.is_active = False
    retired.save()
    with pytest.raises(CommandError) as error:
        call_command("createapitoken", *arguments, stdout=io.StringIO())
    assert str(error.value) == message
    assert not ApiToken.objects.exists()


@pytest.fixture
def superuser_client(client):
    user = make_user("root", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def test_the_admin_shows_a_new_key_once_and_never_again(superuser_client, report):
    viewer = make_user("viewer", "view")
    response = superuser_client.post(
        "/admin/access/apitoken/add/", {"user": viewer.pk, "name": "Grafana"}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    key = re.search(r'<pre class="rs-sql" id="api-token-key">([0-9a-f]{40})</pre>', page).group(1)
    assert "shown only this once" in page
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.digest) == (viewer, "Grafana", digest_of(key))
    assert api_get(key).status_code == 200
    for path in (
        "/admin/access/apitoken/",
        f"/admin/access/apitoken/{token.pk}/change/",
        f"/admin/access/apitoken/{token.pk}/history/",
        "/admin/",
    ):
        shown = superuser_client.get(path).content.decode()
        assert key not in shown and token.digest not in shown, path


def test_staff_without_superuser_make_and_see_only_their_own_tokens(client, report):
    someone = make_user("someone", "view")
    create_token(someone, "theirs")
    staff = make_user("analyst", "view", staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="access", codename__endswith="apitoken")
    )
    client.force_login(staff)
    listing = client.get("/admin/access/apitoken/").content.decode()
    assert "theirs" not in listing
    # A user field smuggled into the form is ignored: the token is the staff user's own.
    response = client.post("/admin/access/apitoken/add/", {"user": someone.pk, "name": "mine"})
    key = re.search(r'id="api-token-key">([0-9a-f]{40})<', response.content.decode()).group(1)
    assert ApiToken.objects.get(name="mine").user == staff
    other = ApiToken.objects.get(name="theirs")
    assert client.get(f"/admin/access/apitoken/{other.pk}/change/").status_code == 302
    client.post(f"/admin/access/apitoken/{other.pk}/delete/", {"post": "yes"})
    assert ApiToken.objects.filter(pk=other.pk).exists()
    assert api_get(key).status_code == 200


# --- the upgrade: plain keys of the release before become digests -----------------------


def clean_environment(**values):
    cleared = ("DATABASE_URL", "REPORTING_DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DEBUG")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(cleared)}
    environment.update(SECRET_KEY="upgrade-test", **values)
    return environment


def manage(environment, *arguments):
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, (arguments, result.stdout[-3000:], result.stderr[-3000:])
    return result


@contextmanager
def scratch_database(tmp_path):
    """An empty database of the kind the tests run on: its DATABASE_URL."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgraded.sqlite3'}"
        return
    import psycopg

    settings = connection.settings_dict
    name = f"{settings['NAME']}_upgrade"
    server = {
        "host": settings["HOST"],
        "port": settings["PORT"] or 5432,
        "user": settings["USER"],
        "password": settings["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    address = f"{settings['USER']}{password}@{server['host']}:{server['port']}/{name}"
    try:  # thrown away after the test: no waiting for the disk at each commit
        yield f"postgres://{address}?options=-c%20synchronous_commit%3Doff"
    finally:
        with psycopg.connect(**server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_contents(url, tmp_path):
    """Every byte the database keeps, as text: the SQLite file, or a PostgreSQL dump."""
    if url.startswith("sqlite:"):
        return Path(url.removeprefix("sqlite:///")).read_bytes().decode("latin-1")
    return subprocess.run(
        ["pg_dump", "--data-only", url.split("?")[0]],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


# One process for each release (each start of Django costs seconds).
BEFORE_UPGRADE = """
from datetime import UTC, datetime
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
call_command("migrate", "--noinput", verbosity=0)
user = User.objects.create_superuser("integration", "i@example.com", "a-long-password-1")
staff = User.objects.create_user("staff", is_staff=True)
staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="authtoken"))
assert staff.user_permissions.exists()
token = Token.objects.create(user=user)
Token.objects.update(created=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
# What DRF's token admin logged on "Save": the key is the token's id and its name.
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
LogEntry.objects.create(
    user=user, content_type=ContentType.objects.get_for_model(Token), object_id=token.pk,
    object_repr=str(token), action_flag=ADDITION, change_message="[]",
)
print(token.key)
"""

AFTER_UPGRADE = """
import json, os
from django.core.management import call_command
from rest_framework.test import APIClient
from access.models import ApiToken
call_command("migrate", "--noinput")
client = APIClient()
client.credentials(HTTP_AUTHORIZATION="Token " + os.environ["OLD_KEY"])
answer = client.get("/api/reports/")
tokens = list(ApiToken.objects.values_list("digest", "name", "user__username", "created"))
from django.contrib.auth.models import Permission
old = list(Permission.objects.filter(content_type__app_label="authtoken").values_list("codename"))
print(json.dumps({"status": answer.status_code, "tokens": tokens, "old": old}, default=str))
"""


@pytest.mark.long_running
def test_a_plain_token_of_the_release_before_works_after_migrating_and_only_its_digest_stays(
    tmp_path,
):
    with scratch_database(tmp_path) as url:
        before = clean_environment(
            DATABASE_URL=url,
            REPORTSVC_VAR_DIR=str(tmp_path),
            DJANGO_SETTINGS_MODULE="tests.previous_release_settings",
        )
        made = manage(before, "shell", "-c", BEFORE_UPGRADE).stdout
        key = re.search(r"^([0-9a-f]{40})$", made, flags=re.MULTILINE).group(1)
        assert key in database_contents(url, tmp_path)  # the old release kept it as it is

        after = clean_environment(
            DATABASE_URL=url, REPORTSVC_VAR_DIR=str(tmp_path), ALLOWED_HOSTS="testserver"
        )
        output = manage({**after, "OLD_KEY": key}, "shell", "-c", AFTER_UPGRADE).stdout
        assert "Applying access.0002_hash_plain_tokens... OK" in output
        result = json.loads(output.strip().splitlines()[-1])
        assert result["status"] == 200  # the old key authenticates
        [(digest, name, username, created)] = result["tokens"]
        assert (digest, name, username) == (
            digest_of(key),
            "made before keys were hashed",
            "integration",
        )
        assert created.startswith("2025-01-02 03:04:05")  # made then, as before
        assert result["old"] == []  # the old app's permissions went with it
        contents = database_contents(url, tmp_path)
        assert key not in contents and digest_of(key) in contents
