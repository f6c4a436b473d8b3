"""Microsoft Teams: an Adaptive Card POSTed to a Workflows webhook URL ("When a Teams
webhook request is received"). The same content as Slack's message; no file, a link.

Text from reports and rows goes only into ``TextRun`` elements of ``RichTextBlock``s,
which Teams never reads as Markdown; the card is JSON-encoded as a whole, so a cell
cannot add elements or actions.
"""

import json

from runs.services.notifications.channels import chat_hosts
from runs.services.notifications.channels.addresses import redact_url
from runs.services.notifications.channels.base import (
    Channel,
    DeliveryFailed,
    TargetProblem,
    cell_text,
    summarize,
    table_notes,
)
from runs.services.notifications.channels.posting import post_with_retries

CELL_CHARS = 100
CARD_VERSION = "1.5"


def _text(text, **style):
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text, **style}]}


def card_of(event):
    summary = summarize(event)
    attention = summary.kind in ("failure", "alert", "reminder", "stale", "cancelled")
    body = [
        _text(
            f"{summary.icon} {summary.headline}",
            size="Large",
            weight="Bolder",
            color="Attention" if attention else "Good",
        ),
        _text(" ".join(filter(None, [summary.what, summary.note]))),
        # Not a FactSet: its values are read as Markdown.
        {
            "type": "Table",
            "showGridLines": False,
            "firstRowAsHeader": False,
            "columns": [{"width": 1}, {"width": 3}],
            "rows": [
                {
                    "type": "TableRow",
                    "cells": [
                        {"type": "TableCell", "items": [_text(label, weight="Bolder")]},
                        {"type": "TableCell", "items": [_text(value)]},
                    ],
                }
                for label, value in summary.facts
            ],
        },
    ]
    if summary.reason:
        body.append(_text(summary.reason[:2000], fontType="Monospace", color="Attention"))
    if summary.table:
        table = summary.table
        body.append(
            {
                "type": "Table",
                "firstRowAsHeader": True,
                "columns": [{"width": 1} for _ in table.header],
                "rows": [
                    {
                        "type": "TableRow",
                        "cells": [
                            {"type": "TableCell", "items": [_text(name, weight="Bolder")]}
                            for name in table.header
                        ],
                    }
                ]
                + [
                    {
                        "type": "TableRow",
                        "cells": [
                            {
                                "type": "TableCell",
                                "items": [
                                    _text(
                                        cell_text(cell, CELL_CHARS),
                                        fontType="Monospace",
                                        isSubtle=cell.is_null,
                                        italic=cell.is_null,
                                    )
                                ],
                            }
                            for cell in row
                        ],
                    }
                    for row in table.rows
                ],
            }
        )
        if table_notes(table):
            body.append(_text(table_notes(table), isSubtle=True, size="Small"))
    body.append(_text(summary.footer, isSubtle=True, size="Small"))
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
        "actions": [
            {"type": "Action.OpenUrl", "title": label, "url": url} for label, url in summary.links
        ],
    }


def message_of(event):
    """What a Workflows webhook takes: a message with the card as its attachment."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card_of(event),
            }
        ],
    }


class TeamsChannel(Channel):
    name = "teams"
    label = "Teams"
    shows_rows = True
    address_help = (
        "A Teams Workflows webhook URL (https://….logic.azure.com/workflows/… or "
        "https://….api.powerplatform.com/…)."
    )

    def clean_target(self, address, options):
        address = (address or "").strip()
        options = self.check_options(options)
        where = chat_hosts.host_of(address)
        shown = redact_url(address) if "://" in address else address[:40]
        if where is not None and chat_hosts.teams_retired_host(where[1]):
            raise TargetProblem(
                f"'{shown}' is an Office 365 connector URL: Microsoft retired them. Create a "
                "Workflows webhook in Teams and use its URL."
            )
        if where is None or not chat_hosts.teams_host(*where):
            raise TargetProblem(
                f"'{shown}' is not a Teams Workflows URL (https://….logic.azure.com/… or "
                "https://….api.powerplatform.com/…)."
            )
        return address, options

    def redact(self, address):
        return redact_url(address)

    def build(self, event, target):
        return {"payload": message_of(event)}

    def send(self, target, message, attempt):
        where = chat_hosts.host_of(target.address)
        if where is not None and chat_hosts.teams_retired_host(where[1]):
            raise DeliveryFailed(
                "not sent: Office 365 connector URLs were retired by Microsoft; "
                "replace it with a Teams Workflows URL",
                0,
            )
        body = json.dumps(message["payload"]).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "reportsvc-teams"}
        return post_with_retries(
            target.address,
            body,
            headers,
            attempt,
            allowed_host=chat_hosts.refusal("Teams Workflows", chat_hosts.teams_host),
        )


CHANNEL = TeamsChannel()
