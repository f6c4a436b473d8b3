"""Static checks of report SQL, before any database sees it.

The database is the real guard (every run is a read-only transaction); these checks
give users a clear message at save time: one statement only, and it must be a query.
"""

import re

READ_KEYWORDS = ("SELECT", "WITH", "VALUES", "TABLE")

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z_]+")


class ReportSQLError(ValueError):
    """Report SQL that must not run; the message is meant for the user."""


def _skip_quoted(sql, index, quote):
    """Index just past the literal or identifier opening at ``index``."""
    # E'...' strings take backslash escapes, but only when E stands alone: in
    # name'\' the quote after "name" starts a plain string that \ does not escape.
    backslash_escapes = (
        quote == "'"
        and index > 0
        and sql[index - 1] in "eE"
        and (index < 2 or not _is_identifier_char(sql[index - 2]))
    )
    position = index + 1
    while position < len(sql):
        char = sql[position]
        if backslash_escapes and char == "\\":
            position += 2
            continue
        if char == quote:
            if sql.startswith(quote, position + 1):  # doubled quote escapes itself
                position += 2
                continue
            return position + 1
        position += 1
    return len(sql)


def _is_identifier_char(char):
    return char.isalnum() or char in "_$"


def _skip_block_comment(sql, index):
    depth, position = 0, index
    while position < len(sql):
        if sql.startswith("/*", position):
            depth += 1
            position += 2
        elif sql.startswith("*/", position):
            depth -= 1
            position += 2
            if depth == 0:
                return position
        else:
            position += 1
    return len(sql)


def _code_segments(sql):
    """Yield (start, end, is_code) spans: code vs. literals, identifiers and comments."""
    position, code_start = 0, 0
    while position < len(sql):
        char = sql[position]
        end = None
        if char in "'\"":
            end = _skip_quoted(sql, position, char)
        elif sql.startswith("--", position):
            newline = sql.find("\n", position)
            end = len(sql) if newline == -1 else newline + 1
        elif sql.startswith("/*", position):
            end = _skip_block_comment(sql, position)
        elif char == "$":
            tag = _DOLLAR_TAG.match(sql, position)
            previous = sql[position - 1] if position else " "
            if tag and not (previous.isalnum() or previous == "_"):
                closing = sql.find(tag.group(0), tag.end())
                end = len(sql) if closing == -1 else closing + len(tag.group(0))
        if end is None:
            position += 1
            continue
        if code_start < position:
            yield code_start, position, True
        yield position, end, False
        position = code_start = end
    if code_start < len(sql):
        yield code_start, len(sql), True


def split_statements(sql):
    """Split on top-level semicolons; drop statements that are only blanks or comments."""
    statements, current_start = [], 0
    for start, end, is_code in _code_segments(sql):
        if not is_code:
            continue
        for offset, char in enumerate(sql[start:end]):
            if char == ";":
                statements.append(sql[current_start : start + offset])
                current_start = start + offset + 1
    statements.append(sql[current_start:])
    return [text.strip() for text in statements if _has_code(text)]


def _has_code(text):
    return any(is_code and text[start:end].strip() for start, end, is_code in _code_segments(text))


def first_keyword(statement):
    """The statement's leading keyword, upper-cased, ignoring comments and parentheses."""
    for start, end, is_code in _code_segments(statement):
        if not is_code:
            continue
        code = statement[start:end].lstrip().lstrip("(").lstrip()
        if code:
            match = _WORD.match(code)
            return match.group(0).upper() if match else code[:1]
    return ""


def executable_statement(sql):
    """The single read-only statement of a report, ready to execute.

    Raises :class:`ReportSQLError` with a message for the user when the SQL is empty,
    holds more than one statement, or does not start like a query.
    """
    statements = split_statements(sql or "")
    if not statements:
        raise ReportSQLError("The SQL is empty: write one SELECT statement.")
    if len(statements) > 1:
        raise ReportSQLError(
            f"A report runs exactly one statement, but this SQL has {len(statements)}. "
            "Remove everything after the first ';'."
        )
    keyword = first_keyword(statements[0])
    if keyword not in READ_KEYWORDS:
        raise ReportSQLError(
            f"Reports can only read data, but this statement starts with {keyword}. "
            f"Start it with {', '.join(READ_KEYWORDS[:-1])} or {READ_KEYWORDS[-1]}."
        )
    return statements[0]
