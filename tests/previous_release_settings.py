"""The service as the release before hashed API tokens had it: DRF's token app with its
plain keys and its authentication, and none of the access app, django-axes or django-csp.

The upgrade test migrates a database with these settings, makes a token the old way
(`manage.py drf_create_token`), then migrates it with today's settings.
"""

from reportsvc.settings import *  # noqa: F403
from reportsvc.settings import INSTALLED_APPS, MIDDLEWARE, REST_FRAMEWORK

NEW_APPS = ("access", "axes", "csp")

INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in NEW_APPS] + [
    "rest_framework.authtoken"
]
MIDDLEWARE = [name for name in MIDDLEWARE if not name.startswith(("axes.", "csp."))]
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}
