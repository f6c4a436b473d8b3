"""The documentation: the site builds strictly, every block parses, the layout map is the tree.

The runnable blocks run against a real `make run` in tests/test_first_run.py, which
starts one anyway.
"""

import ast
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.docs_blocks import (
    DOCS_DIR,
    PROJECT_DIR,
    RUN_ORDER,
    RUNNABLE,
    SETUP_PAGE,
    SYNTAX_ONLY,
    blocks,
    shell_blocks,
)

APPS = ("reportsvc", "datasources", "reports", "runs", "access")


def test_the_site_builds_strictly(tmp_path):
    """A broken link or anchor, or a page missing from the navigation, fails the build."""
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "mkdocs"),
            "build",
            "--strict",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=PROJECT_DIR,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "quickstart" / "index.html").is_file()
    # Every page of docs/ is in the navigation (strict mode refuses the others).
    pages = {path.relative_to(DOCS_DIR).as_posix() for path in DOCS_DIR.rglob("*.md")}
    nav = (PROJECT_DIR / "mkdocs.yml").read_text()
    assert {page for page in pages if page not in nav} == set()


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[there](api.md#nowhere) [gone](gone.md)\n")
    (docs / "api.md").write_text("# API\n")
    config = (PROJECT_DIR / "mkdocs.yml").read_text()
    config = re.sub(r"(?ms)^nav:.*", "nav:\n  - index.md\n  - api.md\n", config)
    (tmp_path / "mkdocs.yml").write_text(config.replace("site_dir: var/site", "site_dir: site"))
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "mkdocs"), "build", "--strict"],
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "does not contain an anchor '#nowhere'" in result.stderr
    assert "'gone.md'" in result.stderr


def test_every_shell_block_says_whether_it_runs():
    for block in shell_blocks():
        assert block.title == RUNNABLE or (
            block.title.startswith(SYNTAX_ONLY) and len(block.title) > len(SYNTAX_ONLY) + 5
        ), f"{block}: title it runnable, or say why not: checked for syntax: <why>"


def test_runnable_blocks_are_on_pages_the_run_follows():
    runnable = {block.page for block in shell_blocks() if block.runnable}
    assert runnable <= set(RUN_ORDER), runnable - set(RUN_ORDER)
    assert {"README.md", SETUP_PAGE} <= runnable
    setup = next(block for block in shell_blocks(SETUP_PAGE) if block.runnable)
    assert all(f"{name}=" in setup.code for name in ("TOKEN", "BASE", "API", "AUTH"))
    # No fixed address: the blocks follow where `make run` serves.
    for block in shell_blocks():
        if block.runnable:
            code = re.sub(r"(?m)(^|\s)#.*$", "", block.code)  # comments may show an example
            assert "127.0.0.1:8000" not in code and "localhost:8000" not in code, str(block)
            assert not re.search(r"runs/\d+/", code), f"{block}: a run id of its own"


def test_the_readme_alone_reaches_a_downloaded_workbook():
    code = "\n".join(block.code for block in shell_blocks("README.md") if block.runnable)
    assert "createapitoken" in code and '"output_format": "xlsx"' in code
    patch = code.index('"output_format": "xlsx"')
    download = code.index("latest.xlsx")
    assert "runreport" in code[patch:download], "a run between the format and the download"
    assert re.search(r"curl -f\S* [^\n]*latest\.xlsx", code), "curl -f: no error saved"
    assert len((PROJECT_DIR / "README.md").read_text().splitlines()) < 250


@pytest.mark.parametrize("block", shell_blocks(), ids=str)
def test_shell_blocks_parse(block):
    result = subprocess.run(
        ["bash", "-n"], input=block.code, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"{block}: {result.stderr}"


@pytest.mark.parametrize(
    "block",
    [block for block in blocks() if block.language in ("python", "json", "yaml")],
    ids=str,
)
def test_other_blocks_parse(block):
    if block.language == "python":
        ast.parse(block.code)
    elif block.language == "json":
        json.loads(block.code)
    else:
        yaml.safe_load(block.code)


def test_blocks_with_a_pattern_in_them_are_not_shell_blocks():
    for block in shell_blocks():
        assert "<slug>" not in block.code and "{id}" not in block.code, str(block)


# --- the layout map --------------------------------------------------------------------


def layout_map():
    """The paths the architecture page's layout block names, folders ending in /."""
    block = next(block for block in blocks("docs/architecture.md") if block.title == "layout")
    paths, stack = [], []
    for line in block.code.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        depth = len(match.group(1)) // 2
        assert len(match.group(1)) % 2 == 0 and depth <= len(stack), line
        stack = [*stack[:depth], match.group(2)]
        paths.append("".join(stack))
    return paths


def tree():
    """Every package and module of the apps (migrations and __init__.py aside)."""
    found = []
    for app in APPS:
        found.append(f"{app}/")
        for path in sorted((PROJECT_DIR / app).rglob("*")):
            relative = path.relative_to(PROJECT_DIR).as_posix()
            if "__pycache__" in relative or "/migrations" in relative:
                continue
            if path.is_dir() and (path / "__init__.py").exists():
                found.append(f"{relative}/")
            elif path.suffix == ".py" and path.name != "__init__.py":
                found.append(relative)
    return found


def test_the_layout_map_is_the_tree():
    mapped = layout_map()
    assert len(mapped) == len(set(mapped)), "a path named twice"
    in_apps = {path for path in mapped if path.split("/")[0] in APPS}
    actual = set(tree())
    assert actual - in_apps == set(), "in the tree, missing from docs/architecture.md"
    assert in_apps - actual == set(), "in docs/architecture.md, gone from the tree"
    for path in set(mapped) - in_apps:  # the other top-level folders it describes
        assert (PROJECT_DIR / path).is_dir(), path


# --- the admin screenshot ---------------------------------------------------------------


@pytest.mark.long_running
@pytest.mark.skipif(
    not os.path.exists("/usr/bin/chromium") and os.environ.get("REQUIRE_BROWSER_TESTS") != "1",
    reason="/usr/bin/chromium is not installed (apt-get install chromium)",
)
def test_the_admin_screenshot_is_made_from_the_demo(tmp_path):
    output = tmp_path / "admin-reports.png"
    result = subprocess.run(
        [sys.executable, "tools/screenshot.py", "--output", str(output)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = (int.from_bytes(output.read_bytes()[at : at + 4], "big") for at in (16, 20))
    assert (width, height) == (1400, 900)
