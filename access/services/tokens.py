"""API tokens: made with a random key, kept as the key's SHA-256 digest, found by it.

A key is 160 random bits, so a fast hash is enough: nobody can search that space,
whatever the hash costs, and a slow one would cost every API request. The plain key
exists only in the answer to whoever made the token.
"""

import hashlib
import hmac
import secrets

from access.models import ApiToken

KEY_BYTES = 20  # 40 hex digits, the form DRF's keys had (those still work: same digest)


def digest_of(key):
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(token):
    """Give the unsaved ``token`` a new key; returns the key, which is not kept."""
    key = secrets.token_hex(KEY_BYTES)
    token.digest = digest_of(key)
    return key


def create_token(user, name=""):
    """A new token for ``user``: ``(token, key)``. Show the key now or never."""
    token = ApiToken(user=user, name=name)
    key = issue_key(token)
    token.save()
    return token, key


def token_for_key(key):
    """The token with this key, its user loaded, or None."""
    digest = digest_of(key)
    try:
        token = ApiToken.objects.select_related("user").get(digest=digest)
    except ApiToken.DoesNotExist:
        return None
    # The database found it by the digest; compare again in constant time, so the
    # answer does not hang on how a string comparison happens to be made.
    return token if hmac.compare_digest(token.digest, digest) else None
