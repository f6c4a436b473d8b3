"""The code blocks of README.md and the documentation site, as the tests read them.

A shell block's title says what the tests do with it: ```` ```sh title="runnable" ````
is run against a real `make run`; ```` ```sh title="checked for syntax: <why>" ```` is
only parsed, and says why it cannot run in a test.
"""

import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DOCS_DIR = PROJECT_DIR / "docs"
RUNNABLE = "runnable"
SYNTAX_ONLY = "checked for syntax: "
# The page that sets $BASE, $API and $AUTH, which the other pages' runnable blocks use.
SETUP_PAGE = "docs/quickstart.md"
# Pages in the order a reader meets them: their runnable blocks run in this order.
RUN_ORDER = ("README.md", SETUP_PAGE, "docs/api.md", "docs/parameters.md")

FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    page: str  # relative to the project: README.md, docs/api.md
    line: int
    language: str
    title: str
    code: str

    def __str__(self):
        return f"{self.page}:{self.line}"

    @property
    def runnable(self):
        return self.title == RUNNABLE


def pages():
    """README.md, then every page of the documentation site."""
    return [PROJECT_DIR / "README.md", *sorted(DOCS_DIR.rglob("*.md"))]


def blocks(page=None):
    found = []
    for path in [PROJECT_DIR / page] if page else pages():
        text = path.read_text()
        for match in FENCE.finditer(text):
            title = re.search(r'title="([^"]*)"', match.group(2))
            found.append(
                Block(
                    page=str(path.relative_to(PROJECT_DIR)),
                    line=text.count("\n", 0, match.start()) + 1,
                    language=match.group(1),
                    title=title.group(1) if title else "",
                    code=match.group(3),
                )
            )
    return found


def shell_blocks(page=None):
    return [block for block in blocks(page) if block.language == "sh"]


def shell_lines():
    """Commands of every shell block, one per line, continuations joined, comments dropped."""
    lines = []
    for block in shell_blocks():
        for line in block.code.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def all_text():
    return "\n".join(path.read_text() for path in pages())
