"""Who reaches the service: API tokens kept as digests, the pause on addresses that send
invalid tokens, and the client address that pause and the admin login lockout go by."""
