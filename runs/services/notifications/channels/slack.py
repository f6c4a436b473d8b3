"""Slack: a Block Kit message to an incoming webhook, or with a bot token
(SLACK_BOT_TOKEN) to a channel id, the run's file uploaded into the message's thread
through slack-sdk's ``files_upload_v2`` (the retired ``files.upload`` is never used).

Text from reports and rows (names, errors, cells) goes only into ``plain_text`` objects
and ``rich_text`` text elements, which Slack shows as typed: ``<!channel>``, ``<@U…>``,
``*bold*`` stay text. The fallback ``text`` has ``&``, ``<``, ``>`` escaped and the
message sets ``mrkdwn: false``.
"""

import json
import re
import threading
import time
import urllib.parse

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.handler import RetryHandler

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

CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,20}$")
HEADER_CHARS = 150
FIELD_CHARS = 300
CELL_CHARS = 80
TABLE_CHARS = 2800  # of a rich_text block's preformatted text; Slack takes 4000 a block

# What Slack's incoming webhooks answer, said in words.
WEBHOOK_ANSWERS = {
    "no_service": "the webhook was removed or its app uninstalled",
    "no_team": "the workspace no longer exists",
    "team_disabled": "the workspace is disabled",
    "channel_not_found": "the webhook's channel no longer exists",
    "channel_is_archived": "the webhook's channel is archived",
    "action_prohibited": "an admin restricted posting to the channel",
    "invalid_token": "the webhook's token is no longer valid",
    "invalid_payload": "Slack did not accept the message",
}


def escape(text):
    """Slack's three escapes: what stops ``<!channel>`` and ``<@U…>`` in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text, chars):
    text = text if len(text) <= chars else text[: chars - 1] + "…"
    return {"type": "plain_text", "text": text or " ", "emoji": False}


def _preformatted(text):
    return {
        "type": "rich_text",
        "elements": [
            {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": text}]}
        ],
    }


def table_text(table):
    """The rows as aligned monospace text, cut to TABLE_CHARS (whole rows)."""
    cells = [[cell_text(cell, CELL_CHARS) for cell in row] for row in table.rows]
    header = [name[:CELL_CHARS] for name in table.header]
    widths = [
        max([len(name)] + [len(row[i]) for row in cells if i < len(row)])
        for i, name in enumerate(header)
    ]

    def line(values):
        return " | ".join(value.ljust(widths[i]) for i, value in enumerate(values)).rstrip()

    lines = [line(header), "-+-".join("-" * width for width in widths)]
    shown = 0
    for row in cells:
        candidate = line(row)
        if sum(len(each) + 1 for each in lines) + len(candidate) > TABLE_CHARS:
            break
        lines.append(candidate)
        shown += 1
    note = table_notes(table)
    if shown < len(cells):
        note = f"{shown} of the first {len(cells)} rows fit in a Slack message. {note}".strip()
    return "\n".join(lines), note


def blocks_of(summary):
    blocks = [
        {"type": "header", "text": _plain(f"{summary.icon} {summary.headline}", HEADER_CHARS)},
        {
            "type": "section",
            "text": _plain(" ".join(filter(None, [summary.what, summary.note])), 2000),
        },
        {
            "type": "section",
            "fields": [_plain(f"{label}: {value}", FIELD_CHARS) for label, value in summary.facts][
                :10
            ],
        },
    ]
    if summary.reason:
        blocks.append(_preformatted(summary.reason[:2000]))
    if summary.table:
        text, note = table_text(summary.table)
        blocks.append(_preformatted(text))
        if note:
            blocks.append({"type": "context", "elements": [_plain(note, 2000)]})
    if summary.links:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": _plain(label, 75), "url": url}
                    for label, url in summary.links
                ],
            }
        )
    blocks.append({"type": "context", "elements": [_plain(summary.footer, 2000)]})
    return blocks


def message_of(event):
    """The Block Kit message (the payload of an incoming webhook)."""
    summary = summarize(event)
    return {
        "text": escape(f"{summary.icon} {summary.headline}"),
        "mrkdwn": False,
        "unfurl_links": False,
        "blocks": blocks_of(summary),
    }


def describe_webhook_failure(failure):
    answer = failure.answer.strip()
    if answer and answer != "ok":
        meaning = WEBHOOK_ANSWERS.get(answer)
        return f"{failure} {answer}" + (f" ({meaning})" if meaning else "")
    return str(failure)


class BoundedRateLimits(RetryHandler):
    """slack-sdk's retry on 429, waiting Retry-After only when it is short enough
    (NOTIFY_RETRY_AFTER_MAX_SECONDS), at most NOTIFY_RATE_LIMIT_RETRIES times, and not
    once the worker stops; counts its retries for the delivery."""

    def __init__(self, attempt):
        super().__init__(max_retry_count=settings.NOTIFY_RATE_LIMIT_RETRIES)
        self.attempt, self.retries = attempt, 0

    def _retry_after(self, response):
        for name, values in response.headers.items():
            if name.lower() == "retry-after":
                value = values[0] if isinstance(values, list) else values
                try:
                    return float(value)
                except ValueError:
                    return None
        return 1.0

    def _can_retry(self, *, state, request, response=None, error=None):
        if response is None or response.status_code != 429 or self.attempt.stopped():
            return False
        wait = self._retry_after(response)
        return wait is not None and wait <= settings.NOTIFY_RETRY_AFTER_MAX_SECONDS

    def prepare_for_next_attempt(self, *, state, request, response=None, error=None):
        state.next_attempt_requested = True
        self.retries += 1
        self.attempt.wait(self._retry_after(response))
        state.increment_current_attempt()


def _api_error(call, error):
    code = error.response.get("error", "") if error.response is not None else ""
    status = getattr(error.response, "status_code", None)
    if status == 429:
        code = "ratelimited (HTTP 429): still rate limited after the waits allowed"
    return f"Slack API {call}: {code or error}"


class SlackChannel(Channel):
    name = "slack"
    label = "Slack"
    shows_rows = True
    address_help = (
        "An incoming-webhook URL (https://hooks.slack.com/services/…), or with SLACK_BOT_TOKEN "
        "set a channel id (C…): the file is then uploaded too."
    )

    def clean_target(self, address, options):
        address = (address or "").strip()
        options = self.check_options(options)
        if CHANNEL_ID.match(address):
            if not settings.SLACK_BOT_TOKEN:
                raise TargetProblem(
                    f"'{address}' is a channel id: posting to channel ids needs a bot token "
                    "(SLACK_BOT_TOKEN). Use an incoming-webhook URL instead."
                )
            return address, options
        where = chat_hosts.host_of(address)
        path = urllib.parse.urlsplit(address).path if where is not None else ""
        if (
            where is None
            or not chat_hosts.slack_webhook_host(*where)
            or not path.startswith("/services/")
        ):
            raise TargetProblem(
                f"'{redact_url(address) if '://' in address else address[:40]}' is neither a Slack "
                "incoming-webhook URL (https://hooks.slack.com/services/…) nor a channel id "
                "(C…, G… or D…, upper case)."
            )
        return address, options

    def redact(self, address):
        return address if CHANNEL_ID.match(address) else redact_url(address)

    def build(self, event, target):
        return {"payload": message_of(event), "file": event.file}

    def send(self, target, message, attempt):
        if CHANNEL_ID.match(target.address):
            if not settings.SLACK_BOT_TOKEN:
                raise DeliveryFailed(
                    "not sent: posting to a channel id needs a bot token (SLACK_BOT_TOKEN)", 0
                )
            return self._send_with_token(target.address, message, attempt)
        body = json.dumps(message["payload"]).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "reportsvc-slack"}
        return post_with_retries(
            target.address,
            body,
            headers,
            attempt,
            allowed_host=chat_hosts.refusal(
                "Slack's incoming-webhook", chat_hosts.slack_webhook_host
            ),
            describe=describe_webhook_failure,
        )

    def _send_with_token(self, channel_id, message, attempt):
        """chat.postMessage, then the file (within NOTIFY_ATTACH_MAX_BYTES) into its
        thread; the whole sequence bounded by NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS."""
        rate_limits = BoundedRateLimits(attempt)
        client = WebClient(
            token=settings.SLACK_BOT_TOKEN,
            base_url=chat_hosts.slack_api_url(),
            timeout=max(1, int(settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS)),
            retry_handlers=[rate_limits],
        )
        outcome = {}

        def converse():
            try:
                outcome["note"] = self._post_and_upload(client, channel_id, message, outcome)
            except SlackApiError as error:
                outcome["error"] = _api_error(outcome.get("call", "chat.postMessage"), error)
            except (SlackRequestError, OSError, ValueError) as error:
                outcome["error"] = f"Slack API: {type(error).__name__}: {error}"
            except Exception as error:  # recorded, never raised into the lane
                outcome["error"] = f"Slack API: unexpected {type(error).__name__}"

        thread = threading.Thread(target=converse, name="slack-upload", daemon=True)
        thread.start()
        # A daemon thread: a Slack that stalls is left behind at the deadline, or as
        # soon as the worker stops, never waited for.
        deadline = time.monotonic() + settings.NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS
        while thread.is_alive() and time.monotonic() < deadline and not attempt.stopped():
            thread.join(min(0.1, max(0.0, deadline - time.monotonic())))
        attempts = 1 + rate_limits.retries
        if thread.is_alive() and attempt.stopped():
            raise DeliveryFailed("Slack API: not finished: the worker stopped", attempts)
        if thread.is_alive():
            raise DeliveryFailed(
                f"Slack API: timed out after {settings.NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS:g} s "
                "(NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS)",
                attempts,
            )
        if "error" in outcome:
            raise DeliveryFailed(outcome["error"], attempts)
        return attempts

    def _post_and_upload(self, client, channel_id, message, outcome):
        outcome["call"] = "chat.postMessage"
        payload = message["payload"]
        posted = client.chat_postMessage(
            channel=channel_id,
            text=payload["text"],
            blocks=payload["blocks"],
            mrkdwn=False,
            unfurl_links=False,
        )
        stored = message["file"]
        if stored is None or stored.size is None:
            return ""
        if stored.size > settings.NOTIFY_ATTACH_MAX_BYTES:
            return "file larger than NOTIFY_ATTACH_MAX_BYTES: linked, not uploaded"
        with stored.open() as file:
            content = file.read()
        name = stored.name
        outcome["call"] = "files_upload_v2"
        client.files_upload_v2(
            channel=channel_id,
            file=content,
            filename=name,
            title=name,
            thread_ts=posted.get("ts"),
        )
        return ""


CHANNEL = SlackChannel()
