"""The admin: a Stale badge and filter, freshness alerts on the report's page, the
reminder interval as a field, and bulk Enable / Disable for those who may change reports."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.utils import timezone

from reports.models import Report
from runs.models import Delivery
from tests.api_helpers import make_user
from tests.test_admin import form_data

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def admin_client(client):
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


@pytest.fixture
def reports():
    stale = Report.objects.create(
        name="Stale one",
        slug="stale",
        sql="SELECT 1",
        schedule="0 6 * * *",
        expect_success_within=timedelta(hours=1),
        notify_emails="ops@example.com",
    )
    Report.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(hours=2))
    fresh = Report.objects.create(
        name="Fresh one",
        slug="fresh",
        sql="SELECT 1",
        schedule="0 7 * * *",
        expect_success_within=timedelta(days=1),
    )
    plain = Report.objects.create(name="Plain one", slug="plain", sql="SELECT 1")
    return stale, fresh, plain


def listed(client, query=""):
    html = client.get(f"/admin/reports/report/{query}").content.decode()
    return html, {name for name in ("Stale one", "Fresh one", "Plain one") if name in html}


def test_the_list_shows_a_stale_badge_and_filters_by_freshness(admin_client, reports):
    html, shown = listed(admin_client)
    assert shown == {"Stale one", "Fresh one", "Plain one"}
    assert html.count('class="rs-badge rs-stale"') == 1
    assert listed(admin_client, "?stale=yes")[1] == {"Stale one"}
    assert listed(admin_client, "?stale=no")[1] == {"Fresh one"}
    assert listed(admin_client, "?stale=none")[1] == {"Plain one"}


def test_the_report_page_shows_freshness_and_its_alerts(admin_client, reports):
    stale, _, plain = reports
    Delivery.objects.create(
        report=stale, channel="email", target="ops@example.com", reason="stale", status="sent"
    )
    page = admin_client.get(f"/admin/reports/report/{stale.pk}/change/").content.decode()
    assert "id='freshness-alerts'" in page and "ops@example.com" in page
    assert "Last success: never" in page
    page = admin_client.get(f"/admin/reports/report/{plain.pk}/change/").content.decode()
    assert "No expectation: the report is never stale." in page


def test_viewers_see_freshness_alerts_with_addresses_redacted(client, reports):
    stale, _, _ = reports
    Delivery.objects.create(
        report=stale, channel="email", target="ops@example.com", reason="stale", status="sent"
    )
    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_report"))
    client.force_login(viewer)
    page = client.get(f"/admin/reports/report/{stale.pk}/change/").content.decode()
    assert "id='freshness-alerts'" in page and "ops@example.com" not in page


def test_the_reminder_interval_is_a_field_with_its_error(admin_client):
    response = admin_client.post(
        "/admin/reports/report/add/", form_data(notify_repeat_after="00:00:10")
    )
    assert response.status_code == 200
    assert "At least a minute (00:01:00), not 0:00:10" in response.content.decode()
    assert not Report.objects.exists()
    admin_client.post("/admin/reports/report/add/", form_data(notify_repeat_after="02:00:00"))
    assert Report.objects.get().notify_repeat_after == timedelta(hours=2)


def test_bulk_disable_and_enable_record_versions_and_move_the_schedule(admin_client, reports):
    stale, fresh, plain = reports
    Report.objects.filter(pk=plain.pk).update(enabled=False)
    selected = [stale.pk, fresh.pk, plain.pk]
    response = admin_client.post(
        "/admin/reports/report/",
        {"action": "disable_reports", "_selected_action": selected},
        follow=True,
    )
    assert "Disabled 2 report(s); 1 already disabled." in response.content.decode()
    assert set(Report.objects.values_list("enabled", "next_run_at")) == {(False, None)}
    newest = stale.history.order_by("-history_version").first()
    assert newest.history_changes == ["enabled"] and newest.history_change_reason == "admin"
    assert LogEntry.objects.filter(change_message="Disabled.").count() == 2
    admin_client.post(
        "/admin/reports/report/", {"action": "enable_reports", "_selected_action": selected}
    )
    stale.refresh_from_db()
    plain.refresh_from_db()
    assert stale.enabled and stale.next_run_at is not None  # its schedule fires again
    assert plain.enabled and plain.next_run_at is None  # manual only


def test_bulk_actions_are_refused_without_change_report(client, reports):
    stale, fresh, _ = reports
    viewer = make_user("viewer", staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_report", "run_report"])
    )
    client.force_login(viewer)
    listing = client.get("/admin/reports/report/").content.decode()
    assert "disable_reports" not in listing and "enable_reports" not in listing
    response = client.post(
        "/admin/reports/report/",
        {"action": "disable_reports", "_selected_action": [stale.pk, fresh.pk]},
        follow=True,
    )
    assert "No action selected." in response.content.decode()
    assert list(Report.objects.filter(enabled=False)) == []
    assert stale.history.count() == 1
