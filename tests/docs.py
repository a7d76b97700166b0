"""Fenced blocks of the user docs, for the doc tests: every snippet a reader can paste is checked."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO

# The docs a newcomer reads; their snippets are parsed, checked or run by tests/test_docs*.py.
SNIPPET_DOCS = ("README.md", "deploy/README.md", "examples/README.md")
# Every user doc: none may point outside the repository.
USER_DOCS = (*SNIPPET_DOCS, "SECURITY.md", "BENCHMARKS.md", "docs/delivery-semantics.md")
LANGUAGES = {"sh", "yaml", "python", "text", "json"}

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
_HEADING = re.compile(r"^(#{1,6}) (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str
    section: str  # the nearest `##` heading above it

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def read(doc: str) -> str:
    return (REPO / doc).read_text()


def blocks(doc: str) -> list[Block]:
    text = read(doc)
    heads = [(m.start(), m.group(2).strip()) for m in _HEADING.finditer(text) if len(m.group(1)) == 2]
    out = []
    for m in _FENCE.finditer(text):
        section = next((h for pos, h in reversed(heads) if pos < m.start()), "")
        out.append(Block(doc, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2), section))
    return out


def all_blocks(lang: str | None = None) -> list[Block]:
    return [b for doc in SNIPPET_DOCS for b in blocks(doc) if lang is None or b.lang == lang]


def commands(block: Block) -> list[str]:
    """The shell commands of a block: continuation lines joined, comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def argv(command: str) -> list[str]:
    """A command's words, without a trailing `# comment`."""
    return shlex.split(command, comments=True)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc: str) -> set[str]:
    return {slug(m.group(2)) for m in _HEADING.finditer(read(doc))}


def table_rows(doc: str, heading: str) -> list[list[str]]:
    """The cells of the first table under `heading` (any level), header and separator dropped."""
    text = read(doc)
    m = re.search(rf"^#+ {re.escape(heading)}\n", text, re.M)
    assert m, f"{doc}: no heading {heading!r}"
    rows: list[list[str]] = []
    for line in text[m.end() :].splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def repo_path(doc: str, target: str) -> Path:
    return (REPO / doc).parent / target
