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
