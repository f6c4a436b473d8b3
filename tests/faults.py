"""Real faults for tests of what the service does when something breaks: the database
itself refuses a write, as a constraint or a broken disk would, for every connection and
every process (the worker processes tests start too)."""

import contextlib

from django.db import connection

REFUSAL = "recording refused by a trigger of the test"


@contextlib.contextmanager
def refused_updates(report, condition):
    """While the block runs, the service's database refuses updates of ``report``'s
    runs that meet ``condition`` (SQL over ``OLD`` and ``NEW``): a trigger raises."""
    when = f"NEW.report_id = {int(report.pk)} AND ({condition})"
    if connection.vendor == "postgresql":
        create = [
            "CREATE FUNCTION test_refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$",
            "CREATE TRIGGER test_refuse_update BEFORE UPDATE ON runs_run FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION test_refuse_update()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS test_refuse_update ON runs_run",
            "DROP FUNCTION IF EXISTS test_refuse_update()",
        ]
    else:
        create = [
            f"CREATE TRIGGER test_refuse_update BEFORE UPDATE ON runs_run WHEN {when} "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS test_refuse_update"]
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in drop:
                cursor.execute(statement)


def refused_success(report):
    """The database refuses to record that a run of ``report`` succeeded."""
    return refused_updates(report, "NEW.status = 'succeeded'")
