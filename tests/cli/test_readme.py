"""The README's command table and flag vocabulary cannot drift from the CLI: every command is listed, every flag a
row shows is an option of that command (by its current name), every required option is shown, and the vocabulary
table is the one ``llmad.cli.vocabulary`` generates."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_walk import COMMANDS, options
from llmad.cli.vocabulary import markdown_table, short_forms

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text()
LEAVES = sorted(p for p, c in COMMANDS.items() if p and not hasattr(c, "commands"))


def command_rows() -> list[tuple[str, str]]:
    """(command path, the row's command text) for each `llmad ...` of the first column of the Commands table."""
    section = TEXT.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `llmad "):
            continue
        first = re.split(r"(?<!\\)\|", line)[1]
        for snippet in re.findall(r"`(llmad [^`]*)`", first):
            words = snippet.split()[1:]
            path = max((p for p in LEAVES if words[:len(p.split())] == p.split()), key=len, default=None)
            assert path, f"README: {snippet!r} names no llmad command"
            rows.append((path, snippet))
    return rows


ROWS = command_rows()


def flags_of(path: str) -> set[str]:
    return {o for p in options(path) for o in [*p.opts, *p.secondary_opts]}


def test_every_command_is_in_the_table():
    missing = sorted(set(LEAVES) - {p for p, _ in ROWS})
    assert not missing, f"README Commands table lacks: {missing}"


@pytest.mark.parametrize("path, snippet", ROWS, ids=[s for _, s in ROWS])
def test_row_flags_are_real(path, snippet):
    shown = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", snippet.replace("\\|", " ")))
    unknown = shown - flags_of(path)
    assert not unknown, f"README row `{snippet}`: not options of llmad {path}: {sorted(unknown)}"
    required = {next(o for o in p.opts if o.startswith("--")) for p in options(path) if p.required}
    assert required <= shown, f"README row `{snippet}` omits required {sorted(required - shown)}"


def test_vocabulary_table_is_generated():
    assert markdown_table() in TEXT, ("README's flag vocabulary is stale: paste the output of python -c 'from "
                                      "llmad.cli.vocabulary import markdown_table; print(markdown_table())'")
    assert short_forms() in TEXT
