"""Help, version and completion: `-h` and `--help` on every command, defaults shown, no rendering artefacts;
`llmad --version` / `-V`; `--show-completion` prints a script and completion answers with command names."""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from badinput.runner import run_cli
from cli_walk import COMMANDS, options
from llmad.cli import app, main

WIDTH = 400  # wide enough that no option row wraps


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    """Help rendered wide enough that no option row wraps (typer reads $TERMINAL_WIDTH once, at import)."""
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", WIDTH)


def help_text(path: str, flag: str = "--help") -> str:
    res = CliRunner().invoke(app, [*path.split(), flag], terminal_width=WIDTH, prog_name="llmad")
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_renders_cleanly(path):
    text = help_text(path)
    assert text == help_text(path, "-h")
    assert f"Usage: llmad {path}".strip() in text
    rows = {ln.split()[1]: ln for ln in text.splitlines() if re.match(r"^│\s+(\*\s+)?--", ln)
            for ln in [ln.replace("*", " ", 1)]}
    for p in options(path):
        flag = next(o for o in p.opts if o.startswith("--"))
        row = rows.get(flag)
        assert row is not None, f"llmad {path} --help: no row for {flag}"
        if p.is_flag:
            assert "<bool>" not in row, f"llmad {path} --help: a flag shows a type: {row.strip()}"
        elif p.required:
            assert "[required]" in row, row
        elif p.default is not None and not callable(p.default):
            assert "[default: " in row, f"llmad {path} --help: {flag} hides its default {p.default!r}"
    for artefact in ("{", "}", "<bool>", "\\[", "[/"):
        assert artefact not in text, f"llmad {path} --help shows {artefact!r}:\n{text}"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    from importlib.metadata import version

    res = run_cli([flag])
    assert res.rc == 0, res.text
    assert res.out.strip() == f"llmad {version('llmad')}"


def test_show_completion_prints_a_script(capsys, monkeypatch):
    # The shell is named on the command line; without this typer also sniffs the parent process for one, which
    # fails where no shell started the tests (nohup, some CI runners).
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    with pytest.raises(SystemExit) as e:
        main(["--show-completion", "bash"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "_LLMAD_COMPLETE=complete_bash" in out and "complete " in out


def test_completion_answers(monkeypatch, capsys):
    """What the installed shell function asks: the commands that start with "rep", then replay's options."""
    monkeypatch.setenv("_LLMAD_COMPLETE", "complete_bash")
    for words, cword, want in (("llmad rep", "1", "replay"), ("llmad replay --li", "2", "--limit")):
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", cword)
        with pytest.raises(SystemExit):
            main([])
        assert want in capsys.readouterr().out.split()
