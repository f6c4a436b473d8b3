"""Text that every database can store and every page can show.

A Python string can hold what no database stores: lone surrogates (a JSON body's
``"\\ud800"`` escape, a command line's undecodable bytes) and NUL, which PostgreSQL text
and JSON refuse. Values are refused where they enter (``storage_problem``); what must
be written or shown anyway (error messages quoting a value, rows stored before the
check) is written with escapes instead (``escaped``), as text anyone can read.
"""


def storage_problem(text):
    """Why ``text`` cannot be stored on both databases, for a message; None if it can."""
    if "\x00" in text:
        return "Text cannot contain the NUL character (\\0): PostgreSQL text cannot hold it."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"Text must be valid Unicode: character {error.start + 1} is a lone surrogate "
            f"({escaped(text[error.start])}), which no database can store."
        )
    return None


def escaped(text):
    """``text`` with lone surrogates and NUL written as escapes (``\\ud800``, ``\\x00``)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def shown(value, limit=100):
    """A value quoted in a message: its first ``limit`` characters, escaped."""
    return escaped(str(value)[:limit])


def escaped_data(data):
    """JSON-like ``data`` with every string (keys too) ``escaped``."""
    if isinstance(data, str):
        return escaped(data)
    if isinstance(data, dict):
        return {escaped_data(key): escaped_data(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [escaped_data(item) for item in data]
    return data


def read_sqlite_text_leniently(sender, connection, **kwargs):
    """``connection_created`` receiver: the service's own SQLite database hands text that
    is not UTF-8 (bytes written past Django, e.g. SQLite's ``char(55296)``) to Python
    escaped (``\\xed\\xa0\\x80``), instead of failing every query that reads its row."""
    if connection.vendor == "sqlite" and connection.alias == "default":
        connection.connection.text_factory = _lenient_text


def _lenient_text(data):
    return str(data, "utf-8", "backslashreplace")
