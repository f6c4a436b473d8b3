"""The keys of DRF's token table (``authtoken_token``, plain text) become digests here,
so every existing token keeps working, then that table goes and this one takes its name.

Raw SQL: DRF's app is no longer installed, so its model is not in the migration state.
A database that never had the table (a new install) only gets the rename. The old app's
permissions go too (granting them would do nothing), and the admin log's entries about its
tokens, which name them by their keys.
"""

import hashlib

from django.db import migrations

PLAIN_TABLE = "authtoken_token"


def zero_what_is_deleted(schema_editor):
    """On SQLite, freed pages are overwritten, so deleted keys do not linger in the file
    (the default of some SQLite builds, not of all)."""
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("PRAGMA secure_delete = ON")


def hash_plain_tokens(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if PLAIN_TABLE not in connection.introspection.table_names(cursor):
            return
        description = connection.introspection.get_table_description(cursor, PLAIN_TABLE)
        columns = {column.name for column in description}
        if "key" not in columns:
            return
        quote = connection.ops.quote_name
        cursor.execute(f"SELECT {quote('key')}, user_id, created FROM {quote(PLAIN_TABLE)}")
        rows = cursor.fetchall()
    ApiToken = apps.get_model("access", "ApiToken")
    tokens = ApiToken.objects.using(connection.alias)
    for key, user_id, created in rows:
        token = tokens.create(
            digest=hashlib.sha256(key.encode()).hexdigest(),
            user_id=user_id,
            name="made before keys were hashed",
        )
        tokens.filter(pk=token.pk).update(created=created)  # auto_now_add set it to now
    zero_what_is_deleted(schema_editor)
    schema_editor.execute(f"DROP TABLE {quote(PLAIN_TABLE)}")


def forget_the_old_token_app(apps, schema_editor):
    """DRF's token admin logged each token with its key as id and name: those entries go,
    then the app's content types and, with them, its permissions."""
    zero_what_is_deleted(schema_editor)
    alias = schema_editor.connection.alias
    log = apps.get_model("admin", "LogEntry").objects.using(alias)
    log.filter(content_type__app_label="authtoken").delete()
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(alias)
    content_types.filter(app_label="authtoken").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0001_initial"),
        # Their models are in the state, so deleting the old content types takes their
        # permissions and clears the admin log's references to them.
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        # Backwards the digests stay in access_apitoken: plain keys cannot come back.
        migrations.RunPython(hash_plain_tokens, migrations.RunPython.noop),
        migrations.RunPython(forget_the_old_token_app, migrations.RunPython.noop),
        migrations.AlterModelTable(name="apitoken", table=PLAIN_TABLE),
    ]
