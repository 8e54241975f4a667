"""`-q` means quiet in every command (issue #18 item 3): library warnings and log records go to
`<out>/warnings.log`, llmad's own named warnings (suspicious input) still reach the user. (numeric -q:
tests/badinput/test_numeric.py, the thin-validation warning.)"""
from __future__ import annotations

import logging
import warnings

from badinput.runner import assert_no_crash, run_cli
from icl_fixtures import smol_tokenizer  # noqa: F401 (a fixture)

import llmad.metrics.classification as classification
from llmad.errors import warn


def test_baseline_quiet_logs_library_noise_and_shows_named_warnings(tmp_path, monkeypatch):
    scoring = classification.timed_scoring

    def noisy(*args, **kwargs):
        warnings.warn("a library deprecation nobody can act on", FutureWarning)
        logging.getLogger("transformers").warning("a library log record")
        warn("odd-input", "something about the user's data")
        return scoring(*args, **kwargs)

    monkeypatch.setattr(classification, "timed_scoring", noisy)
    # Earlier tests may have lowered transformers' verbosity (a process-wide setting): make the record reach -q's log.
    lib = logging.getLogger("transformers")
    monkeypatch.setattr(lib, "level", logging.WARNING)
    monkeypatch.setattr(lib, "disabled", False)
    out = tmp_path / "run"
    res = run_cli(["baseline", "--data", "flowbench:1000genome", "--limit", "60", "--out", str(out), "-q"], timeout=90)
    assert_no_crash(res)
    assert res.rc == 0, res.text[-2000:]
    assert "warning [odd-input]: something about the user's data" in res.err
    assert "deprecation" not in res.text and "log record" not in res.text
    log = (out / "warnings.log").read_text()
    assert "a library deprecation nobody can act on" in log and "a library log record" in log
    assert "odd-input" not in log


def test_icl_context_overflow_is_named_and_capped(smol_tokenizer, tmp_path, recwarn):  # noqa: F811
    """One warning per prompt that does not fit could be thousands: three reach the user, then one count."""
    from icl_fixtures import tiny_gpt2

    from llmad.api.hooks import RunHooks
    from llmad.api.icl import ICLRun, run_icl
    from llmad.detectors.icl.config import ICLConfig

    run = ICLRun(data="flowbench:1000genome", limit=6, val_limit=5, out=str(tmp_path / "icl"))
    res = run_icl(ICLConfig(shots=2, batch_size=2, max_prompt_tokens=60), run, hooks=RunHooks(log=None, quiet=True),
                  lm=tiny_gpt2(smol_tokenizer))
    shown = [str(w.message) for w in recwarn if getattr(w.message, "name", None) == "context-overflow"]
    assert len(shown) == 4 and "more prompt(s)" in shown[-1], shown
    assert sum(res.metrics["counters"].values()) > 3
