from rest_framework import authentication, exceptions

from access.client_address import lockout_address
from access.services.token_pauses import record_invalid_token, seconds_paused
from access.services.tokens import token_for_key


class TokensPaused(exceptions.Throttled):
    default_detail = (
        "Too many invalid tokens came from your address, so every token from it is refused for now."
    )


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, DRF's header, checked against the keys' digests.

    Invalid keys are counted per client address; past TOKEN_FAILURE_LIMIT that address
    gets 429 with Retry-After for every token until its window ends. The pause is checked
    before the key, so a paused address cannot learn whether a guess was right.
    """

    def authenticate(self, request):
        self.address = lockout_address(request) or "unknown"
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        wait = seconds_paused(self.address)
        if wait:
            raise TokensPaused(wait=wait)
        token = token_for_key(key)
        if token is None:
            record_invalid_token(self.address)
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return (token.user, token)
