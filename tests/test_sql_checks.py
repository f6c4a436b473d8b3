"""What report SQL may be, as each database's own parser reads it (no database needed)."""

import pytest

from datasources.backends import backend_for_vendor
from datasources.sandbox import ReportSQLError, without_statement_text


def read_only_statement(sql, vendor):
    return backend_for_vendor(vendor).read_only_statement(sql)


@pytest.mark.parametrize(
    ("sql", "statement"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  SELECT 1 ;  ", "SELECT 1"),
        ("SELECT ';' AS semicolon;", "SELECT ';' AS semicolon"),
        ('SELECT 1 AS "a;b"', 'SELECT 1 AS "a;b"'),
        ("SELECT 1 -- trailing; comment", "SELECT 1 -- trailing; comment"),
        ("/* a; /* nested; */ b; */ SELECT 1", "SELECT 1"),
        ("SELECT $$a;b$$, $tag$c;d$tag$", "SELECT $$a;b$$, $tag$c;d$tag$"),
        ("SELECT E'it\\'s;'", "SELECT E'it\\'s;'"),
        ("SELECT 'it''s;'", "SELECT 'it''s;'"),
        ("SELECT 'café 😀' AS x; -- ü", "SELECT 'café 😀' AS x"),
        ("WITH t AS (SELECT 1) SELECT * FROM t", "WITH t AS (SELECT 1) SELECT * FROM t"),
        ("(SELECT 1) UNION (SELECT 2);;", "(SELECT 1) UNION (SELECT 2)"),
        ("VALUES (1), (2)", "VALUES (1), (2)"),
        ("table demo_orders", "table demo_orders"),
        ("SELECT 1 AS x$$$", "SELECT 1 AS x$$$"),
    ],
)
def test_one_read_statement_is_accepted_on_postgres(sql, statement):
    assert read_only_statement(sql, "postgresql") == statement


# Smuggling attempts built from PostgreSQL's lexical rules: each hides a second
# statement from a naive splitter. PostgreSQL's own parser sees every one of them.
SMUGGLED = [
    "SELECT 1 AS x$$$; COMMIT; DROP TABLE t; SELECT 1 AS y$$$",
    "SELECT 1 --\r; COMMIT; DROP TABLE t",
    "SELECT 1 --\f\n; DROP TABLE t",
    "SELECT 1 /* /* */ */; DROP TABLE t",
    "SELECT E'\\''; DROP TABLE t; SELECT ''",
    "SELECT U&'\\0041'; DROP TABLE t",
    'SELECT 1 AS "a""b"; DROP TABLE t',
    "SELECT name'\\'; DROP TABLE t; SELECT '",
    "SELECT $a$ $b$ $a$; DROP TABLE t",
    "SELECT 1;\x0bDROP TABLE t",
    "SELECT 1; COPY (SELECT 1) TO PROGRAM 'id'",
    "SELECT 1\n;\nCOMMIT",
]


@pytest.mark.parametrize("sql", SMUGGLED)
def test_a_second_statement_is_always_seen(sql):
    with pytest.raises(ReportSQLError, match=r"exactly one statement|cannot parse"):
        read_only_statement(sql, "postgresql")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("", "The SQL is empty"),
        ("  -- just a comment", "The SQL is empty"),
        ("SELECT 1; DROP TABLE demo_orders", "PostgreSQL reads 2 statements"),
        ("DELETE FROM demo_orders", "this is a DELETE statement"),
        ("update demo_orders set status = 'x'", "this is an UPDATE statement"),
        ("CREATE TABLE evil (a int)", "this is a CREATE statement"),
        ("/* hidden */ INSERT INTO t VALUES (1)", "this is an INSERT statement"),
        ("COPY demo_orders TO '/tmp/x'", "this is a COPY statement"),
        ("EXPLAIN ANALYZE DELETE FROM t", "this is an EXPLAIN statement"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "a WITH part"),
        ("SELECT * INTO copy_of_t FROM t", "SELECT … INTO creates a table"),
        ("SELECT * FROM t FOR UPDATE", "FOR UPDATE/SHARE locks rows"),
        ("SELECT * FROM (SELECT * FROM t FOR SHARE) s", "FOR UPDATE/SHARE locks rows"),
        ("SELECT * FROM public.authtoken_token", "reportsvc's own tables (authtoken_token)"),
        ("SELECT u.password FROM auth_user u", "reportsvc's own tables (auth_user)"),
        ("SELECT 'unterminated", "PostgreSQL cannot parse this SQL"),
        ("SELECT $$ unterminated", "PostgreSQL cannot parse this SQL"),
    ],
)
def test_other_sql_is_refused_with_a_reason(sql, message):
    with pytest.raises(ReportSQLError) as error:
        read_only_statement(sql, "postgresql")
    assert message in str(error.value)


def test_sqlite_text_is_left_to_the_driver_but_must_be_complete():
    assert read_only_statement(" SELECT 1; ; ", "sqlite") == "SELECT 1"
    with pytest.raises(ReportSQLError, match="is not closed"):
        read_only_statement("SELECT 'open", "sqlite")
    with pytest.raises(ReportSQLError, match="empty"):
        read_only_statement("   ", "sqlite")


def test_errors_lose_the_lines_that_quote_the_statement():
    error = (
        'column "top secret" does not exist\n'
        "LINE 2: SELECT 'top secret' AS x, \"top secret\"\n"
        "                                   ^\n"
        'HINT:  Perhaps you meant "top_secret".'
    )
    assert without_statement_text(error) == 'column "top secret" does not exist'
    assert without_statement_text("Query timed out after 1 s") == "Query timed out after 1 s"
    assert without_statement_text("") == ""
