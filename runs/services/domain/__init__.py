"""The runs' domain: how runs enter the queue, change status, are cancelled and backfilled,
which data interval they cover, and what their outcomes call for."""
