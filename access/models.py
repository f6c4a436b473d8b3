from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A key for ``Authorization: Token <key>``, kept only as its SHA-256 digest: the key
    itself is shown once, when the token is made (access.services.tokens)."""

    digest = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(
        max_length=100, blank=True, help_text="What uses it, e.g. “nightly ETL”."
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The name the plain keys' table had: the data-source checks, the docs and
        # operators' grants and revokes that name it keep meaning the API tokens.
        db_table = "authtoken_token"
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name or 'token'} of {self.user} (#{self.pk})"


class TokenFailureWindow(models.Model):
    """Invalid tokens from one client address (an IPv6 client's /64) in the window that
    began with the first of them; TOKEN_FAILURE_LIMIT of them pause that address's
    tokens until the window, TOKEN_COOLOFF_SECONDS long, ends."""

    address = models.CharField(max_length=45, unique=True)
    failures = models.PositiveIntegerField()
    started_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "address sending invalid tokens"
        verbose_name_plural = "addresses sending invalid tokens"

    def __str__(self):
        return self.address
