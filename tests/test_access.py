"""API tokens kept as digests and shown once, the pauses on guessing (admin logins and
tokens) that an attacker cannot turn against others, and the Content-Security-Policy."""

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from access.models import ApiToken, TokenFailureWindow
from access.services.tokens import create_token, digest_of
from reports.models import Report
from tests.api_helpers import client_for, make_user, token_key
from tests.test_settings import settings_in_a_fresh_process

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


def test_a_token_of_an_inactive_user_is_refused_without_counting_as_a_guess(report):
    user = make_user("leaver", "view")
    key = token_key(user)
    user.is_active = False
    user.save()
    response = api_get(key)
    assert response.status_code == 401
    assert response.json() == {"detail": "User inactive or deleted."}
    assert not TokenFailureWindow.objects.exists()


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


def test_the_schema_tells_clients_where_keys_come_from_and_about_paused_addresses(report):
    schema = client_for(make_user("viewer", "view")).get("/api/schema/?format=json").json()
    description = schema["components"]["securitySchemes"]["tokenAuth"]["description"]
    assert "`manage.py createapitoken USERNAME`" in description and "shown once" in description
    for path, path_item in schema["paths"].items():
        for method, operation in path_item.items():
            paused = operation["responses"]["429"]
            assert "invalid tokens came from the client's address" in paused["description"], (
                path,
                method,
            )
            assert "Retry-After" in paused["headers"]
    run = schema["paths"]["/api/reports/{slug}/run/"]["post"]["responses"]["429"]
    assert run["description"].startswith("Too many triggers from this user")


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


# --- a pause on an address that sends invalid tokens --------------------------------------


@pytest.fixture
def token_limits(settings):
    settings.TOKEN_FAILURE_LIMIT = 5
    settings.TOKEN_COOLOFF_SECONDS = 600
    return settings


def test_invalid_tokens_pause_their_address_only_and_the_pause_ends(report, token_limits):
    valid = token_key(make_user("viewer", "view"))
    attacker, colleague = "198.51.100.9", "203.0.113.50"
    for attempt in range(5):
        assert api_get(f"{attempt:040x}", attacker).status_code == 401
    paused = api_get("f" * 40, attacker)
    assert paused.status_code == 429
    assert paused.json()["detail"].startswith(
        "Too many invalid tokens came from your address, so every token from it is refused "
        "for now. Expected available in"
    )
    assert 590 <= int(paused["Retry-After"]) <= 600
    # Even the right key: a paused address cannot tell a right guess from a wrong one.
    assert api_get(valid, attacker).status_code == 429
    # Everyone else: valid tokens work, invalid ones are counted for their own address.
    assert api_get(valid, colleague).status_code == 200
    assert api_get("0" * 40, colleague).status_code == 401
    # Nothing is written while the address is paused: the flood costs reads only.
    window = TokenFailureWindow.objects.get(address=attacker)
    for _ in range(20):
        api_get("0" * 40, attacker)
    assert TokenFailureWindow.objects.get(address=attacker).failures == window.failures == 5
    # The window ends 600 s after the first invalid token.
    TokenFailureWindow.objects.filter(address=attacker).update(
        started_at=timezone.now() - timedelta(seconds=601)
    )
    assert api_get(valid, attacker).status_code == 200
    assert api_get("0" * 40, attacker).status_code == 401
    assert TokenFailureWindow.objects.get(address=attacker).failures == 1


def test_invalid_tokens_below_the_limit_in_a_window_never_pause(report, token_limits):
    valid = token_key(make_user("viewer", "view"))
    for window in range(3):
        TokenFailureWindow.objects.update(started_at=timezone.now() - timedelta(seconds=601))
        for _ in range(4):
            assert api_get("0" * 40).status_code == 401, window
        assert api_get(valid).status_code == 200


def test_an_admin_lifts_a_pause_by_deleting_the_address(report, token_limits, superuser_client):
    valid = token_key(make_user("viewer", "view"))
    for _ in range(6):
        api_get("0" * 40, "198.51.100.9")
    assert api_get(valid, "198.51.100.9").status_code == 429
    window = TokenFailureWindow.objects.get()
    listing = superuser_client.get("/admin/access/tokenfailurewindow/").content.decode()
    assert "198.51.100.9" in listing
    superuser_client.post(f"/admin/access/tokenfailurewindow/{window.pk}/delete/", {"post": "yes"})
    assert api_get(valid, "198.51.100.9").status_code == 200


def test_an_ipv6_client_counts_by_its_slash_64(report, token_limits):
    valid = token_key(make_user("viewer", "view"))
    for host in range(1, 6):  # five addresses of one /64
        assert api_get("0" * 40, f"2001:db8:1:2::{host:x}").status_code == 401
    assert api_get(valid, "2001:db8:1:2:ffff::1").status_code == 429
    assert api_get(valid, "2001:db8:1:3::1").status_code == 200  # the next /64
    assert list(TokenFailureWindow.objects.values_list("address", flat=True)) == ["2001:db8:1:2::"]


def test_without_a_proxy_setting_forwarded_headers_change_nothing(report, token_limits):
    valid = token_key(make_user("viewer", "view"))
    for number in range(5):  # a new made-up address each time, from one real address
        api_get("0" * 40, "198.51.100.9", HTTP_X_FORWARDED_FOR=f"10.0.0.{number}")
    assert api_get(valid, "198.51.100.9", HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429


def test_behind_a_proxy_the_address_comes_from_its_header_read_from_the_right(report, token_limits):
    token_limits.CLIENT_ADDRESS_HEADER = "X-Forwarded-For"
    valid = token_key(make_user("viewer", "view"))
    proxy = "10.0.0.2"
    for number in range(5):  # the client makes up the left part; the proxy adds its view
        api_get("0" * 40, proxy, HTTP_X_FORWARDED_FOR=f"1.1.1.{number}, 198.51.100.9")
    assert api_get(valid, proxy, HTTP_X_FORWARDED_FOR="198.51.100.9").status_code == 429
    assert (
        api_get(valid, proxy, HTTP_X_FORWARDED_FOR="198.51.100.9, 203.0.113.50").status_code == 200
    )
    assert api_get(valid, proxy, HTTP_X_FORWARDED_FOR="203.0.113.50").status_code == 200
    # Two proxies: the second from the right is the address the outer one saw.
    token_limits.CLIENT_ADDRESS_PROXY_COUNT = 2
    paused = api_get(valid, proxy, HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.9, 10.0.0.1")
    assert paused.status_code == 429
    assert api_get(valid, proxy, HTTP_X_FORWARDED_FOR="198.51.100.9, 10.0.0.1").status_code == 429


@pytest.mark.parametrize(
    ("header", "remote", "expected"),
    [
        (None, "198.51.100.9", "198.51.100.9"),
        ("198.51.100.9", "10.0.0.2", "198.51.100.9"),
        ("198.51.100.9:4711", "10.0.0.2", "198.51.100.9"),
        ("[2001:db8::1]:4711", "10.0.0.2", "2001:db8::"),
        ("::ffff:198.51.100.9", "10.0.0.2", "198.51.100.9"),
        ("not-an-address", "10.0.0.2", "10.0.0.2"),
        ("", "10.0.0.2", "10.0.0.2"),
        ("unknown, 198.51.100.9", "10.0.0.2", "198.51.100.9"),
    ],
)
def test_the_lockout_address_of_a_request(rf, settings, header, remote, expected):
    from access.client_address import lockout_address

    settings.CLIENT_ADDRESS_HEADER = "X-Forwarded-For"
    headers = {} if header is None else {"HTTP_X_FORWARDED_FOR": header}
    assert lockout_address(rf.get("/", REMOTE_ADDR=remote, **headers)) == expected


# --- admin logins: locked per username and address, for a while -----------------------


def log_in(username, password, address):
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )
    return response


@pytest.fixture
def people():
    for name in ("ops", "colleague"):
        user = make_user(name, staff=True)
        user.set_password("the-right-password-1")
        user.save()


def test_forty_wrong_passwords_lock_that_user_from_that_address_until_the_cool_off(
    people, settings
):
    attacker = "198.51.100.9"
    answers = [log_in("ops", f"guess-{n}", attacker).status_code for n in range(40)]
    assert answers[: settings.LOGIN_FAILURE_LIMIT - 1] == [200] * 9  # the form again
    assert set(answers[settings.LOGIN_FAILURE_LIMIT - 1 :]) == {429}
    refused = log_in("ops", "the-right-password-1", attacker)
    assert refused.status_code == 429
    page = refused.content.decode()
    assert "10 failed logins for “ops” came from your" in page
    assert "paused for 15 minutes" in page
    assert "_auth_user_id" not in refused.client.session
    # The lock is the pair: the user elsewhere, and others from there, log in.
    assert log_in("ops", "the-right-password-1", "203.0.113.50").status_code == 302
    assert log_in("colleague", "the-right-password-1", attacker).status_code == 302
    # The passwords tried are not kept.
    assert "guess-" not in "".join(AccessAttempt.objects.values_list("post_data", flat=True))
    # Tries during the lock do not prolong it; after the cool-off the right one works.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(seconds=901))
    assert log_in("ops", "the-right-password-1", attacker).status_code == 302


def test_an_administrator_lifts_a_login_lock_with_axes_reset(people):
    for n in range(10):
        log_in("ops", f"guess-{n}", "198.51.100.9")
    assert log_in("ops", "the-right-password-1", "198.51.100.9").status_code == 429
    call_command("axes_reset_username", "ops", stdout=io.StringIO())
    assert log_in("ops", "the-right-password-1", "198.51.100.9").status_code == 302


def test_logins_behind_a_proxy_are_locked_by_the_address_the_proxy_saw(people, settings):
    settings.CLIENT_ADDRESS_HEADER = "X-Real-IP"

    def through_proxy(password, client_address):
        return Client().post(
            "/admin/login/?next=/admin/",
            {"username": "ops", "password": password},
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_REAL_IP=client_address,
        )

    for n in range(10):
        through_proxy(f"guess-{n}", "198.51.100.9")
    assert through_proxy("the-right-password-1", "198.51.100.9").status_code == 429
    assert through_proxy("the-right-password-1", "203.0.113.50").status_code == 302


@pytest.mark.parametrize(
    "name",
    [
        "TOKEN_FAILURE_LIMIT",
        "TOKEN_COOLOFF_SECONDS",
        "LOGIN_FAILURE_LIMIT",
        "LOGIN_COOLOFF_SECONDS",
        "CLIENT_ADDRESS_PROXY_COUNT",
    ],
)
def test_a_limit_below_one_is_refused_by_name(name):
    result = settings_in_a_fresh_process(f"settings.{name}", DEBUG="1", **{name: "0"})
    assert result.returncode != 0
    assert f"{name} must be 1 or more, not 0." in result.stderr


# --- Content-Security-Policy ------------------------------------------------------------


def policy(response):
    directives = response["Content-Security-Policy"].split("; ")
    return dict(directive.partition(" ")[::2] for directive in directives)


def test_admin_pages_send_a_policy_without_inline_script_and_nonced_styles(superuser_client):
    response = superuser_client.get("/admin/")
    directives = policy(response)
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    nonce = re.search(r"'nonce-([^']+)'", directives["style-src"]).group(1)
    page = response.content.decode()
    assert f'<style nonce="{nonce}">' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)  # no inline script
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handler
    assert len(base64.b64decode(nonce)) == 16
    assert policy(superuser_client.get("/admin/"))["style-src"] != directives["style-src"]


def test_the_report_form_confirms_through_a_script_file_not_an_inline_handler(
    superuser_client, report
):
    page = superuser_client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert 'data-confirm="Replace the webhook secret?' in page
    assert not re.search(r"\son[a-z]+=", page)
    assert "/static/reportsvc/confirm.js" in page


def test_the_api_docs_load_their_script_from_a_file(superuser_client):
    response = superuser_client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "'unsafe-inline'" not in policy(response)["script-src"]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    script_url = re.search(r'<script src="(/api/docs/\?[^"]*script=[^"]*)"', page).group(1)
    script = superuser_client.get(script_url.replace("&amp;", "&"))
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()


def test_the_login_paused_page_works_under_the_policy(people):
    for n in range(10):
        response = log_in("ops", f"guess-{n}", "198.51.100.9")
    nonce = re.search(r"'nonce-([^']+)'", policy(response)["style-src"]).group(1)
    assert f'<style nonce="{nonce}">' in response.content.decode()


def test_the_policy_can_report_and_report_only():
    result = settings_in_a_fresh_process(
        "settings.CONTENT_SECURITY_POLICY_REPORT_ONLY['DIRECTIVES']['report-uri'], "
        "getattr(settings, 'CONTENT_SECURITY_POLICY', None)",
        DEBUG="1",
        CSP_REPORT_URI="https://csp.example.com/report",
        CSP_REPORT_ONLY="1",
    )
    assert result.stdout.strip() == "['https://csp.example.com/report'] None", result.stderr
