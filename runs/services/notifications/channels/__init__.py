"""Notification channels: one module each, behind one small interface.

Each module of this package defines ``CHANNEL``, an instance of a
:class:`~runs.services.notifications.channels.base.Channel` subclass; ``CHANNEL_MODULES``
lists them. Adding a channel is adding its module (and its tests) and its name here:
reports accept its targets, the API and admin offer it, deliveries record it.

A channel owns, for its targets:

- ``clean_target(address, options)``: the normalised ``(address, options)`` or
  TargetProblem (the message shown at save);
- ``redact(address)``: the address as shown to people who may not change the report,
  recorded on deliveries and logged;
- ``build(event, target)``: the message for an :class:`Event` of any kind in
  ``EVENT_KINDS``;
- ``send(target, message, attempt)``: send it within the whole-attempt deadline, no
  redirects, to allowed hosts only; returns the attempts made or raises DeliveryFailed.

Like the output formats, the package knows no app (tests/test_layers.py): reports.models
asks it for choices and validation, and what a channel needs of a run (its file) comes
with the event.
"""

import functools
from importlib import import_module

CHANNEL_MODULES = ("email", "webhook", "slack", "teams")


@functools.cache
def channels():
    """Every channel by name, in CHANNEL_MODULES order."""
    found = {}
    for module_name in CHANNEL_MODULES:
        channel = import_module(f"{__name__}.{module_name}").CHANNEL
        found[channel.name] = channel
    return found


def get_channel(name):
    """The channel called ``name``, or None."""
    return channels().get(name)


def channel_choices():
    """(name, label) pairs: Delivery.channel and the targets' ``channel``."""
    return [(channel.name, channel.label) for channel in channels().values()]
