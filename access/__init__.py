"""API tokens, kept as the digests of their keys."""
