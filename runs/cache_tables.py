"""The database cache's table comes with `migrate`: no separate createcachetable step.

The default cache (CACHES, where the run-trigger throttle counts requests) is a table in
the service's database. After every migrate, on every database it migrates, any missing
cache table is created (createcachetable leaves existing ones alone and skips caches
that are not database caches), so `make run`, docker compose's migrate service and the
test database all have it.
"""

from django.core.management import call_command
from django.db.models.signals import post_migrate
from django.dispatch import receiver


@receiver(post_migrate)
def create_cache_tables(sender, using, verbosity=1, **kwargs):
    if sender.name != "runs":  # the signal comes once per app; once is enough
        return
    call_command("createcachetable", database=using, verbosity=verbosity)
