"""Every relative link in the README and the docs names a file or folder the repository has, so a
record a page cites (a table, a run's JSON, a plot) cannot go missing unnoticed."""

from __future__ import annotations

import re

from helpers import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page):
    for target in LINK.findall(page.read_text()):
        path = target.split("#")[0]
        if path and not re.match(r"[a-z]+:", path):
            yield path


def test_every_relative_link_of_the_readme_and_the_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    missing = [f"{page.relative_to(ROOT)}: {path}" for page in pages for path in relative_links(page)
               if not (page.parent / path).exists()]
    assert len(pages) > 10 and not missing, missing


def test_a_missing_target_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](gone.json) [b](https://example.org) [c](#anchor) [d](page.md#top)")
    assert list(relative_links(page)) == ["gone.json", "page.md"]
