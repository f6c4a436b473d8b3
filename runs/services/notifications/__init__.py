"""Notifications: events about reports and runs, sent to targets through channels."""
