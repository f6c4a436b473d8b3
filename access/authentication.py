from rest_framework import authentication, exceptions

from access.services.tokens import token_for_key


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, DRF's header, checked against the keys' digests."""

    def authenticate_credentials(self, key):
        token = token_for_key(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return (token.user, token)
