"""Who may do what and see what, for the API and the admin alike.

Reading reports, runs and outputs (previews, downloads) needs ``reports.view_report``;
triggering a run needs ``reports.run_report``; writing reports needs the model's
add/change/delete permissions. The SQL (a report's, a run's executed statement, the
statement a database error quotes) needs ``reports.view_report_sql``: staff status
alone does not show it. Notification targets, delivery errors and the webhook secret
are shown in full only to those who may change the report (``reports.change_report``);
others see URLs as scheme and host and addresses as their domain.
"""

from rest_framework.permissions import BasePermission, DjangoModelPermissions

from datasources.sandbox import without_statement_text
from reports.targets import shown_delivery_error, shown_target

VIEW_REPORTS = "reports.view_report"
RUN_REPORTS = "reports.run_report"
VIEW_SQL = "reports.view_report_sql"
CHANGE_REPORTS = "reports.change_report"
VIEW_RUN_RECORDS = "runs.view_run"


def can_view_reports(user):
    return user.is_active and user.has_perm(VIEW_REPORTS)


def can_run_reports(user):
    return can_view_reports(user) and user.has_perm(RUN_REPORTS)


def can_view_sql(user):
    return user.is_active and user.has_perm(VIEW_SQL)


def can_change_reports(user):
    """May change reports, and so see their notification targets and webhook secret."""
    return can_view_reports(user) and user.has_perm(CHANGE_REPORTS)


class Visibility:
    """What one user sees of reports and runs; every page and response asks it."""

    def __init__(self, user):
        """``user`` None: someone who may see nothing beyond the basics."""
        self.outputs = user is not None and can_view_reports(user)  # previews, downloads
        self.sql = user is not None and can_view_sql(user)
        self.targets = user is not None and can_change_reports(user)  # and delivery errors
        # The admin's run pages and lists (the API's runs need view_report only).
        self.run_records = user is not None and user.is_active and user.has_perm(VIEW_RUN_RECORDS)

    def error(self, text):
        """A run's error; without the lines that quote the statement for those who may
        not see the SQL."""
        return text if self.sql else without_statement_text(text)

    def target(self, delivery):
        return shown_target(delivery, self.targets)

    def delivery_error(self, delivery):
        return shown_delivery_error(delivery, self.targets)


NOBODY = Visibility(None)


def visibility_of(request):
    """The request user's Visibility, worked out once per request."""
    if not hasattr(request, "_reportsvc_visibility"):
        request._reportsvc_visibility = Visibility(request.user)
    return request._reportsvc_visibility


class ReportModelPermissions(DjangoModelPermissions):
    """Model permissions, with reading guarded by the view permission too."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


class CanViewReports(BasePermission):
    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and can_view_reports(
            request.user
        )


class CanRunReports(BasePermission):
    message = "You may view this report but not run it (needs the run_report permission)."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and can_run_reports(
            request.user
        )


class CanChangeReports(BasePermission):
    message = "You may view this report but not change it (needs the change_report permission)."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated) and can_change_reports(
            request.user
        )
