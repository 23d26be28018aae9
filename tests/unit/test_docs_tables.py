"""The docs' generated tables equal what their reports say, and the docs' links resolve.

Each table in README.md and docs/*.md between ``<!-- table: SOURCE ... -->`` and
``<!-- /table -->`` must be exactly what ``python -m training.evaluation.tables`` writes from
SOURCE, so a figure edited by hand (or a report rerun without ``make docs``) fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from training.evaluation import tables

ROOT = tables.ROOT
PAGES = [
    p for p in [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
]
TABLE_PAGES = tables.default_pages()


def _marked(page: Path) -> list[tuple[str, str, str]]:
    text = page.read_text(encoding="utf-8")
    return [(m["source"], m["options"], m["body"]) for m in tables.markers(text)]


def test_the_readme_has_the_headline_table() -> None:
    sources = [source for source, _, _ in _marked(ROOT / "README.md")]
    assert "reports/scientific-test.json" in sources


@pytest.mark.parametrize(
    "page, source, options, body",
    [(p.relative_to(ROOT).as_posix(), *t) for p in TABLE_PAGES for t in _marked(p)],
)
def test_table_equals_its_report(page: str, source: str, options: str, body: str) -> None:
    assert body == tables.render(source, tables._options(options)), (
        f"{page}: the table from {source} differs from its report; run `make docs`"
    )


def test_a_figure_edited_by_hand_is_caught(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = tables.markers(readme)[0]
    row = table["body"].splitlines()[2]  # the first row under the header and the rule
    edited = readme.replace(row, row.replace("0.", "9.", 1), 1)
    assert edited != readme
    _, changed = tables.regenerate(edited)
    assert changed == [(table["source"], readme.count("\n", 0, table.start()) + 1)]
    page = tmp_path / "README.md"
    page.write_text(edited, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "training.evaluation.tables", "--check", str(page)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and table["source"] in done.stderr
    assert page.read_text(encoding="utf-8") == edited  # --check writes nothing
    tables.main([str(page)])
    assert tables.regenerate(page.read_text(encoding="utf-8"))[1] == []


def test_a_missing_source_is_one_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- table: reports/none.json -->\n<!-- /table -->\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "training.evaluation.tables", "--check", str(page)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "reports/none.json does not exist" in done.stderr


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    seen: dict[str, int] = {}
    anchors = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto: are not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and (file.suffix != ".md" or anchor not in _anchors(file)):
            broken.append(target)
    assert not broken, f"{page.name}: links that point nowhere: {broken}"


def test_reports_from_before_the_query_text_still_render() -> None:
    """The query text's metrics (text_words, text_differs) are new: a report without them renders
    its default table as before, and shows them as n/a when a table asks for them; a new report
    shows them."""
    import json

    from training.evaluation.report import markdown_table

    old = json.loads((ROOT / "reports/scientific-test-dense.json").read_text(encoding="utf-8"))
    label = next(iter(old["methods"]))
    assert "text_words" not in old["methods"][label]["metrics"]
    assert (
        tables.report_table(old, {"columns": "q_em,cons@10"}).count("\n") == len(old["methods"]) + 2
    )
    table = tables.report_table(old, {"columns": "q_em,text_words,text_differs"})
    assert table.splitlines()[2].endswith("| n/a | n/a |")
    assert "| n/a | n/a |" in markdown_table(old["methods"])
    new = {"methods": {label: json.loads(json.dumps(old["methods"][label]))}}
    metrics = new["methods"][label]["metrics"]
    metrics["text_words"] = {"mean": 3.25, "low": 3.0, "high": 3.5}
    metrics["text_differs"] = {"mean": 0.5, "low": 0.4, "high": 0.6}
    table = tables.report_table(new, {"columns": "text_words,text_differs"})
    assert table.splitlines()[0] == "| method | text words | text differs from intent |"
    assert table.splitlines()[2] == f"| {label} | 3.25 | 0.500 [0.400, 0.600] |"
