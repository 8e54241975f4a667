"""One flag vocabulary (``llmad.cli.vocabulary``): every option of every command is a vocabulary word or one of
that command's own flags; short forms mean one long flag everywhere; renamed flags still work, with a warning."""
from __future__ import annotations

import pytest

from cli_walk import COMMANDS, context, long_flag, options
from llmad.cli.options import LlmadCommand
from llmad.cli.vocabulary import DEPRECATED, OWN, SHORT, VOCABULARY
from llmad.errors import LlmadWarning

# Vocabulary words no command has yet, and why (remove an entry once a command has the flag).
NOT_YET_USED = {"--force": "h-rundir adds --force to every command (issue 18 item 4)"}


def test_every_command_uses_the_llmad_command_class():
    """The class that rewrites deprecated flags and hints at --data is on every command."""
    plain = [path for path, c in COMMANDS.items() if not hasattr(c, "commands") and not isinstance(c, LlmadCommand)]
    assert not plain, f"register these with cls=LlmadCommand (or ConfigCommand): {plain}"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_flag_is_in_the_vocabulary(path):
    own = set(OWN.get(path, ()))
    for p in options(path):
        flag = long_flag(p)
        assert flag in VOCABULARY or flag in own, (
            f"llmad {path}: {flag} is neither a vocabulary word nor one of this command's own flags; reuse a word of "
            f"llmad/cli/vocabulary.py VOCABULARY (same idea, same name) or add it there / to OWN[{path!r}]")
        for short in (o for o in p.opts if not o.startswith("--")):
            assert SHORT.get(short) == flag, f"llmad {path}: {short} is {flag} here but {SHORT.get(short)} elsewhere"
        for neg in p.secondary_opts:
            assert neg == "--no-" + flag[2:] or neg in SHORT, f"llmad {path}: {neg} is not the negation of {flag}"


def test_own_flags_are_one_commands_and_exist():
    used: dict[str, set[str]] = {}
    for path in COMMANDS:
        for p in options(path):
            used.setdefault(long_flag(p), set()).add(path)
    for path, flags in OWN.items():
        for flag in flags:
            assert flag not in VOCABULARY, f"{flag} is both a vocabulary word and {path!r}'s own"
            assert used.get(flag) == {path}, f"OWN[{path!r}] lists {flag}, used by {sorted(used.get(flag, ()))}"
    unused = set(VOCABULARY) - set(used) - set(NOT_YET_USED)
    assert not unused, f"vocabulary words no command has: {sorted(unused)}"


@pytest.mark.parametrize("path", sorted(DEPRECATED))
def test_deprecated_flags_are_gone_and_their_new_names_exist(path):
    have = {o for p in options(path) for o in p.opts}
    for old, new in DEPRECATED[path].items():
        assert old not in have, f"llmad {path}: {old} is deprecated but still an option"
        assert new in have, f"llmad {path}: {old} -> {new}, which the command does not have"


# A deprecated spelling must still set the option of its new name: (command, args, old flag, expected value).
REQUIRED = {"predict": ["-m", "x", "-d", "flowbench:x"], "replay": ["-m", "x"],
            "pretrain moment": ["--data", "asd:x", "--out", "o"]}
VALUES = {"--int8": True}


@pytest.mark.parametrize("path, old", [(p, o) for p in sorted(DEPRECATED) for o in sorted(DEPRECATED[p])])
def test_deprecated_spelling_still_works(path, old):
    new = DEPRECATED[path][old]
    value = VALUES.get(old, 7)
    args = [*REQUIRED.get(path, []), old] + ([] if value is True else [f"{value}"])
    with pytest.warns(LlmadWarning, match=f"{old} is now {new}$") as caught:
        ctx = COMMANDS[path].make_context(path.split()[-1], args, parent=context(path))
    param = next(p for p in options(path) if new in p.opts)
    assert ctx.params[param.name] == value
    assert [w.message.name for w in caught] == ["deprecated-flag"]


def test_deprecated_flag_with_equals_and_after_double_dash():
    from llmad.cli.options import rewrite_deprecated

    with pytest.warns(LlmadWarning, match="--runs is now --limit"):
        assert rewrite_deprecated("replay", ["--runs=3", "--", "--runs"]) == ["--limit=3", "--", "--runs"]
    assert rewrite_deprecated("watch", ["--runs", "3"]) == ["--runs", "3"]  # only the command's own renames


def test_deprecated_flag_end_to_end(monkeypatch, capsys):
    """`llmad predict --int8` runs with quantize=True and says the new name once."""
    import llmad.api.predict as api
    from llmad.cli import main

    got = {}

    def fake(model, spec, **kw):
        got.update(model=model, **kw)
        return type("R", (), {"summary": "ok"})()

    monkeypatch.setattr(api, "run_predict", fake)
    main(["predict", "-m", "m", "-d", "flowbench:montage", "--int8"])
    assert got["quantize"] is True
    err = capsys.readouterr().err
    assert err.count("[deprecated-flag]") == 1 and "--int8 is now --quantize" in err
