"""Webhooks against hostile receivers and targets: slow answers, redirects, addresses
inside the worker's machine, secrets in URLs; and notification lanes per report."""

import base64
import logging
import socket
import time

import pytest
from django.core.exceptions import ValidationError

from reports.models import Report
from runs.models import Delivery, DeliveryStatus, Run, RunStatus
from runs.services.notifications.channels import bounded_post
from runs.services.notifications.lanes import NotificationLanes
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import needs_commits, wait_for
from tests.receivers import HTTP_OK, TLS_RECORD_HEADER, Receiver, TcpReceiver

pytestmark = pytest.mark.django_db(databases="__all__")

FAILING_SQL = "SELECT * FROM missing_table"


@pytest.fixture(autouse=True)
def quick_webhooks(settings):
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1
    settings.NOTIFY_WEBHOOK_RETRIES = 0
    settings.PUBLIC_BASE_URL = "https://reports.example.com"


@pytest.fixture
def loopback_allowed(settings):
    """Test receivers listen on 127.0.0.1, blocked by default; keep link-local blocked."""
    settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS = ["169.254.0.0/16"]


@pytest.fixture
def servers():
    started = []

    def start(kind, **options):
        started.append(kind(**options))
        return started[-1]

    yield start
    for server in started:
        server.close()


def hooked_report(webhooks_text, slug="hooked", **fields):
    # objects.create does not validate: like a report saved before a rule existed.
    return Report.objects.create(
        name=slug.title(), slug=slug, sql=FAILING_SQL, notify_webhooks=webhooks_text, **fields
    )


# --- time: one timeout for the whole attempt -------------------------------------------


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout(
    settings, servers, loopback_allowed
):
    # A byte every second: each single read is quick, the answer would take a minute.
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1.5
    server = servers(TcpReceiver, trickle=HTTP_OK, interval=1.0)
    run = run_report_now(hooked_report(f"http://127.0.0.1:{server.port}/hook"))
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        DeliveryStatus.FAILED,
        1,
        "timed out after 1.5 s",
    )
    accepted, closed, request = wait_for(lambda: server.connections[0][1] and server.connections[0])
    assert request.startswith(b"POST /hook HTTP/1.1\r\n")
    assert 1.3 < closed - accepted < 2.5  # hung up at the timeout, not after the answer
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_a_tls_handshake_that_trickles_is_cut_off_too(servers, loopback_allowed):
    server = servers(
        TcpReceiver,
        greeting=TLS_RECORD_HEADER,
        trickle=b"\x00" * 100,
        interval=0.3,
        read_request=False,
    )
    started = time.monotonic()
    run_report_now(hooked_report(f"https://127.0.0.1:{server.port}/hook"))
    assert time.monotonic() - started < 5
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.last_error) == (DeliveryStatus.FAILED, "timed out after 1 s")
    # The receiver notes the hang-up on its next trickle (every 0.3 s): wait for it.
    accepted, closed, _ = wait_for(lambda: server.connections[0][1] and server.connections[0])
    assert closed - accepted < 2


# --- redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "location", "shown"),
    [
        (302, "http://internal.example:8080/admin?token=x", "internal.example"),
        (301, "ftp://files.example/drop", "files.example"),
        (307, "/elsewhere", "127.0.0.1"),
    ],
)
def test_redirects_are_not_followed(settings, servers, loopback_allowed, status, location, shown):
    settings.NOTIFY_WEBHOOK_RETRIES = 2
    server = servers(Receiver, statuses=[status], headers={"Location": location})
    run_report_now(hooked_report(server.url))
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        DeliveryStatus.FAILED,
        1,
        f"redirect not followed, {status} to {shown}",
    )
    assert len(server.requests) == 1  # neither followed nor retried


# --- blocked networks: at save -------------------------------------------------------------

BLOCKED_TARGETS = [
    ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/…", "127.0.0.1", "127.0.0.0/8"),
    ("http://[::1]:9000/x?token=abc", "http://[::1]:9000/…", "::1", "::1/128"),
    (
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/…",
        "169.254.169.254",
        "169.254.0.0/16",
    ),
    ("http://localhost:5432/", "http://localhost:5432", "127.0.0.1", "127.0.0.0/8"),
    ("http://[::ffff:127.0.0.1]/x", "http://[::ffff:127.0.0.1]/…", "::ffff:7f00:1", "127.0.0.0/8"),
    ("http://0.0.0.0:8000/", "http://0.0.0.0:8000", "0.0.0.0", "0.0.0.0/8"),
    ("http://224.0.0.251/", "http://224.0.0.251", "224.0.0.251", "224.0.0.0/4"),
]


def blocked_message(shown, address, network):
    return (
        f"'{shown}' points to {address}, in the blocked network {network} "
        "(NOTIFY_WEBHOOK_BLOCKED_NETWORKS)."
    )


@pytest.mark.parametrize(("url", "shown", "address", "network"), BLOCKED_TARGETS)
def test_webhooks_to_blocked_networks_are_refused_when_saved(url, shown, address, network):
    report = Report(
        name="x", slug="x", sql="SELECT 1", notify_webhooks=f"https://ok.example/h\n{url}"
    )
    with pytest.raises(ValidationError) as error:
        report.full_clean()
    assert error.value.message_dict == {
        "notify_webhooks": [blocked_message(shown, address, network)]
    }


def test_private_networks_and_public_hosts_stay_allowed():
    Report(
        name="x",
        slug="x",
        sql="SELECT 1",
        notify_webhooks="http://10.1.2.3:8065/hooks/abc\nhttps://hooks.slack.com/services/T/B/x\n"
        "http://192.168.1.20/hook\nhttp://[fd00::5]/hook",
    ).full_clean()


def test_the_blocked_networks_are_a_setting(settings):
    settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS = ["10.0.0.0/8"]
    Report(name="x", slug="x", sql="SELECT 1", notify_webhooks="http://127.0.0.1/h").full_clean()
    with pytest.raises(ValidationError) as error:
        Report(name="y", slug="y", sql="SELECT 1", notify_webhooks="http://10.9.9.9/h").full_clean()
    assert error.value.messages == [blocked_message("http://10.9.9.9/…", "10.9.9.9", "10.0.0.0/8")]


def test_the_api_refuses_a_blocked_webhook_with_a_field_error():
    editor = client_for(make_user("editor", "editor"))
    response = editor.post(
        "/api/reports/",
        {
            "name": "Leak",
            "slug": "leak",
            "sql": "SELECT 1",
            "notify_webhooks": BLOCKED_TARGETS[2][0],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"notify_webhooks": [blocked_message(*BLOCKED_TARGETS[2][1:])]}
    assert not Report.objects.exists()


def test_the_admin_refuses_a_blocked_webhook_inline(client):
    from tests.test_admin import form_data

    user = make_user("root", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    response = client.post(
        "/admin/reports/report/add/", form_data(notify_webhooks="http://[::1]:9000/x?token=abc")
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "points to ::1, in the blocked network ::1/128" in page
    assert "token=abc" not in page.split('name="notify_webhooks"')[0]  # the message hides it
    assert not Report.objects.exists()


# --- blocked networks: at send time, after DNS -------------------------------------------


def test_a_blocked_target_is_refused_at_send_time_too(settings, servers):
    settings.NOTIFY_WEBHOOK_RETRIES = 2
    server = servers(Receiver)  # listening on 127.0.0.1, blocked by default
    run_report_now(hooked_report(f"{server.url}\nhttp://localhost:{server.port}/hook"))
    by_ip, by_name = Delivery.objects.order_by("id")
    assert (by_ip.status, by_ip.attempts, by_ip.last_error) == (
        DeliveryStatus.FAILED,
        1,
        "refused: 127.0.0.1 is in the blocked network 127.0.0.0/8 "
        "(NOTIFY_WEBHOOK_BLOCKED_NETWORKS)",
    )
    assert by_name.last_error.startswith("refused: localhost (")  # resolved, then checked
    assert by_name.attempts == 1
    assert server.requests == []


def fake_dns(*answers):
    """A resolver that gives ``answers[i]`` (a list of IPv4 addresses) at the i-th lookup."""
    lookups = []

    def resolve(host, port):
        lookups.append(host)
        addresses = answers[min(len(lookups), len(answers)) - 1]
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
            for address in addresses
        ]

    return resolve, lookups


def test_the_connection_goes_to_the_address_that_was_checked(
    servers, loopback_allowed, monkeypatch
):
    # A rebinding name: allowed at the first lookup, the metadata service after.
    server = servers(Receiver)
    resolve, lookups = fake_dns(["127.0.0.1"], ["169.254.169.254"])
    monkeypatch.setattr(bounded_post, "resolve", resolve)
    run_report_now(hooked_report(f"http://hooks.test:{server.port}/hook"))
    assert Delivery.objects.get().status == DeliveryStatus.SENT
    [(headers, _)] = server.requests
    assert headers["Host"] == f"hooks.test:{server.port}"
    assert lookups == ["hooks.test"]  # one lookup, and the connection used its answer


def test_a_name_with_any_blocked_address_is_refused(servers, loopback_allowed, monkeypatch):
    server = servers(Receiver)
    resolve, _ = fake_dns(["127.0.0.1", "169.254.169.254"])
    monkeypatch.setattr(bounded_post, "resolve", resolve)
    run_report_now(hooked_report(f"http://hooks.test:{server.port}/hook"))
    assert Delivery.objects.get().last_error == (
        "refused: hooks.test (169.254.169.254) is in the blocked network 169.254.0.0/16 "
        "(NOTIFY_WEBHOOK_BLOCKED_NETWORKS)"
    )
    assert server.requests == []


def test_a_dns_lookup_that_hangs_counts_against_the_timeout(loopback_allowed, monkeypatch):
    def hanging(host, port):
        time.sleep(5)
        return []

    monkeypatch.setattr(bounded_post, "resolve", hanging)
    started = time.monotonic()
    run_report_now(hooked_report("http://slow-dns.test/hook"))
    assert time.monotonic() - started < 4
    assert Delivery.objects.get().last_error == "timed out after 1 s"


# --- secrets in URLs ---------------------------------------------------------------------


def test_user_password_path_and_query_stay_out_of_records_and_logs(
    servers, loopback_allowed, caplog
):
    caplog.set_level(logging.DEBUG)
    sent, refused = servers(Receiver), servers(Receiver, statuses=[404])
    secret_parts = ["hook-user", "pa55word", "T0SECRET", "tok123"]
    report = hooked_report(
        f"http://hook-user:pa55word@127.0.0.1:{sent.port}/services/T0SECRET?token=tok123\n"
        f"http://127.0.0.1:{refused.port}/services/T0SECRET?token=tok123"
    )
    run = run_report_now(report)
    first, second = Delivery.objects.order_by("id")
    assert (first.status, first.target) == ("sent", f"http://127.0.0.1:{sent.port}/…")
    assert (second.status, second.target) == ("failed", f"http://127.0.0.1:{refused.port}/…")
    assert second.last_error == "HTTP 404 Not Found"
    [(headers, _)] = sent.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"hook-user:pa55word").decode()
    editor = client_for(make_user("editor", "editor"))
    api = editor.get(f"/api/runs/{run.pk}/").content.decode()
    for part in secret_parts:
        assert part not in caplog.text
        assert part not in api
    assert f"target=http://127.0.0.1:{sent.port}/… reason=failed status=sent" in caplog.text


# --- lanes: one report's slow receiver never holds up another ----------------------------


def finished_run(report):
    """A failed run of ``report`` whose notifications have not been sent yet."""
    notify_when = report.notify_when
    Report.objects.filter(pk=report.pk).update(notify_when="never")
    report.refresh_from_db()
    run = run_report_now(report)
    Report.objects.filter(pk=report.pk).update(notify_when=notify_when)
    run.report.refresh_from_db()
    return run


@needs_commits
def test_two_slow_receivers_do_not_hold_up_another_report_s_alert(
    settings, servers, loopback_allowed
):
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 30
    slow_servers = [servers(TcpReceiver, trickle=HTTP_OK, interval=1.0) for _ in range(2)]
    fast = servers(Receiver)
    slow_runs = [
        finished_run(hooked_report(f"http://127.0.0.1:{server.port}/hook", slug=f"slow{index}"))
        for index, server in enumerate(slow_servers)
    ]
    other_run = finished_run(hooked_report(fast.url, slug="other"))
    lanes = NotificationLanes()
    try:
        for run in slow_runs:
            lanes.submit(run)
        for server in slow_servers:
            assert server.connected.wait(5)  # both slow receivers hold a lane now
        submitted = time.monotonic()
        lanes.submit(other_run)
        wait_for(lambda: Delivery.objects.filter(run=other_run, status="sent").exists(), timeout=5)
        assert time.monotonic() - submitted < 2
        assert not Delivery.objects.filter(run__in=slow_runs).exists()  # still waiting
    finally:
        unsent = lanes.close(timeout=0)
    assert sorted(run.pk for run in unsent) == sorted(run.pk for run in slow_runs)


@needs_commits
def test_a_report_s_notifications_go_out_in_order_on_its_lane(servers, loopback_allowed):
    server = servers(Receiver, delay=0.2)
    report = hooked_report(server.url, notify_when="always")
    runs = [finished_run(report) for _ in range(3)]
    lanes = NotificationLanes()
    for run in runs:
        lanes.submit(run)
    assert lanes.close(timeout=10) == []
    assert [d.run_id for d in Delivery.objects.order_by("id")] == [run.pk for run in runs]
    assert [d.status for d in Delivery.objects.all()] == ["sent"] * 3


@needs_commits
def test_closing_the_lanes_gives_up_on_a_slow_receiver_at_the_timeout(
    settings, servers, loopback_allowed
):
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 30
    settings.NOTIFY_WEBHOOK_RETRIES = 3
    server = servers(TcpReceiver, trickle=HTTP_OK, interval=1.0)
    report = hooked_report(f"http://127.0.0.1:{server.port}/hook")
    first, second = finished_run(report), finished_run(report)
    lanes = NotificationLanes()
    lanes.submit(first)
    lanes.submit(second)  # waits behind the first on its report's lane
    assert server.connected.wait(5)
    started = time.monotonic()
    unsent = lanes.close(timeout=0.5)
    assert 0.4 < time.monotonic() - started < 1.5
    assert [run.pk for run in unsent] == [first.pk, second.pk]
    lanes.submit(finished_run(report))  # after the stop: logged, not sent
    assert len(server.connections) == 1
