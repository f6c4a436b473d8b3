from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from access.services.tokens import create_token

PERMISSIONS = {
    "view": ["view_report"],
    "run": ["view_report", "run_report"],
    "sql": ["view_report", "view_report_sql"],
    "editor": ["view_report", "add_report", "change_report", "delete_report"],
}


def make_user(username, role=None, *, staff=False):
    user = get_user_model().objects.create_user(username, password="pw-12345-long", is_staff=staff)
    if role:
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="reports", codename__in=PERMISSIONS[role]
            )
        )
    return user


def token_key(user):
    """The key of a new API token of ``user`` (the service keeps only its digest)."""
    return create_token(user, "tests")[1]


def client_for(user=None):
    """An API client authenticated with a real token (or anonymous)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_key(user)}")
    return client
