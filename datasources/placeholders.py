"""``{{ name }}`` placeholders in report SQL: where they are, and what replaces them.

Finding them is plain text work (every ``{{`` starts one); whether each stands where a
value goes is the database's parser's decision, made by each backend's
``check_positions`` with the markers it puts in their place. The messages here are the
ones every backend gives for what its parser finds.
"""

import re
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"\{\{\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """Report SQL whose placeholders are wrong; the message is meant for the user."""


@dataclass(frozen=True)
class Placeholder:
    name: str
    start: int
    end: int
    line: int

    def __str__(self):
        return f"{{{{ {self.name} }}}} (line {self.line})"


def find_placeholders(sql):
    """The ``{{ name }}`` placeholders of ``sql``, in order.

    Every ``{{`` starts a placeholder: one that is not ``{{ name }}`` raises
    :class:`TemplateError` (write ``'{' || '{'`` for two braces in text).
    """
    found, position = [], 0
    while (start := sql.find("{{", position)) != -1:
        line = sql.count("\n", 0, start) + 1
        match = PLACEHOLDER.match(sql, start)
        if match is None:
            snippet = sql[start : start + 40].split("\n")[0]
            raise TemplateError(
                f"Line {line}: '{snippet}' is not a placeholder. Write {{{{ name }}}} with a "
                "parameter's name (letters, digits, underscores) and close it with }}; for "
                "two braces in text write '{' || '{'."
            )
        found.append(Placeholder(match["name"], start, match.end(), line))
        position = match.end()
    return found


def substitute(sql, placeholders, replacement):
    """``sql`` with each placeholder replaced by ``replacement(index, placeholder)``;
    also the offset at which each replacement starts."""
    parts, offsets, position, length = [], [], 0, 0
    for index, placeholder in enumerate(placeholders):
        head = sql[position : placeholder.start]
        parts.append(head)
        length += len(head)
        offsets.append(length)
        text = replacement(index, placeholder)
        parts.append(text)
        length += len(text)
        position = placeholder.end
    parts.append(sql[position:])
    return "".join(parts), offsets


def with_markers(sql, marker):
    """``sql`` with each placeholder replaced by ``marker(index)`` (a backend's bind
    marker): what the parser-level checks (statement count and kind) read. Raises
    TemplateError for a malformed ``{{``."""
    return substitute(sql, find_placeholders(sql), lambda index, _: marker(index))[0]


def outside_parameter_message(placeholder):
    return (
        f"{placeholder} is inside a string literal or a comment, where it would not be "
        "replaced by a value. Write it where a value goes, without quotes: "
        f"WHERE day = {{{{ {placeholder.name} }}}}."
    )


def bind_parameter_message(written):
    """For a bind parameter the SQL holds itself, as ``written`` in the vendor's syntax."""
    return (
        f"The SQL holds a bind parameter, {written}: report SQL takes values only through "
        "placeholders. Write {{ name }} with a declared parameter's name where the value "
        "goes (or remove it)."
    )


def original_offset(placeholders, offsets, lengths, position):
    """Where ``position`` of the marked text lies in the text as written (``offsets``
    from :func:`substitute`, ``lengths`` of the markers)."""
    shift = 0
    for placeholder, offset, length in zip(placeholders, offsets, lengths, strict=True):
        if offset + length <= position:
            shift += (placeholder.end - placeholder.start) - length
    return position + shift
