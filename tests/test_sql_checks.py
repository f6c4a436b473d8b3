import pytest

from reports.sql import ReportSQLError, executable_statement, first_keyword, split_statements


@pytest.mark.parametrize(
    ("sql", "statement"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  SELECT 1 ;  ", "SELECT 1"),
        ("SELECT ';' AS semicolon;", "SELECT ';' AS semicolon"),
        ('SELECT 1 AS "a;b"', 'SELECT 1 AS "a;b"'),
        ("SELECT 1 -- trailing; comment", "SELECT 1 -- trailing; comment"),
        ("/* a; /* nested; */ b; */ SELECT 1", "/* a; /* nested; */ b; */ SELECT 1"),
        ("SELECT $$a;b$$, $tag$c;d$tag$", "SELECT $$a;b$$, $tag$c;d$tag$"),
        ("SELECT E'it\\'s;'", "SELECT E'it\\'s;'"),
        ("SELECT 'it''s;'", "SELECT 'it''s;'"),
        ("WITH t AS (SELECT 1) SELECT * FROM t", "WITH t AS (SELECT 1) SELECT * FROM t"),
        ("(SELECT 1) UNION (SELECT 2);;", "(SELECT 1) UNION (SELECT 2)"),
        ("VALUES (1), (2)", "VALUES (1), (2)"),
        ("table demo_orders", "table demo_orders"),
    ],
)
def test_one_read_statement_is_accepted(sql, statement):
    assert executable_statement(sql) == statement


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("", "The SQL is empty"),
        ("  -- just a comment", "The SQL is empty"),
        ("SELECT 1; DROP TABLE demo_orders", "this SQL has 2"),
        ("SELECT 1; SELECT 2;", "this SQL has 2"),
        ("DELETE FROM demo_orders", "starts with DELETE"),
        ("update demo_orders set status = 'x'", "starts with UPDATE"),
        ("CREATE TABLE evil (a int)", "starts with CREATE"),
        ("/* hidden */ INSERT INTO t VALUES (1)", "starts with INSERT"),
        ("COPY demo_orders TO '/tmp/x'", "starts with COPY"),
    ],
)
def test_other_sql_is_refused_with_a_reason(sql, message):
    with pytest.raises(ReportSQLError) as error:
        executable_statement(sql)
    assert message in str(error.value)


def test_split_ignores_semicolons_in_literals_and_comments():
    assert split_statements("SELECT ';'; /* ; */ SELECT 2 -- ;\n;") == [
        "SELECT ';'",
        "/* ; */ SELECT 2 -- ;",
    ]


def test_first_keyword_skips_comments_and_parentheses():
    assert first_keyword("-- note\n /* x */ ((select 1))") == "SELECT"
