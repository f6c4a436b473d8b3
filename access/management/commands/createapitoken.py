from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from access.services.tokens import create_token


class Command(BaseCommand):
    help = (
        "Make an API token for USERNAME and print its key, alone on standard output: "
        "TOKEN=$(manage.py createapitoken USERNAME). The key is shown only this once; "
        "the service keeps a digest of it."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what uses the token (shown in the admin)")

    def handle(self, *args, username, name, **options):
        for label, text in (("USERNAME", username), ("--name", name)):
            try:
                text.encode()
            except UnicodeEncodeError:
                raise CommandError(f"{label} is not valid UTF-8 text.") from None
        users = get_user_model()
        try:
            user = users.objects.get(**{users.USERNAME_FIELD: username})
        except users.DoesNotExist:
            raise CommandError(f"There is no user {username!r}.") from None
        if len(name) > 100:
            raise CommandError(f"--name is {len(name)} characters long; at most 100.")
        if not user.is_active:
            raise CommandError(f"The user {username!r} is inactive: its tokens would not work.")
        token, key = create_token(user, name)
        self.stdout.write(key)
        self.stderr.write(
            f"API token #{token.pk} for {username!r}: the key above is shown only this once."
        )
