"""Run llmad the way a hostile-but-realistic user does, and check how it fails.

``run_cli`` runs ``llmad ARGV`` in this process (fast: no re-import) under a wall-clock alarm, so a hang fails the
test instead of stalling CI; ``run_cli_process`` runs it in a child process, for what needs one (stdin, signals,
a hang in C code that an alarm cannot interrupt). Both return an :class:`Outcome`; the ``assert_*`` helpers state
what the issue asks of every case: no traceback, one line naming the file/row/field, exit 2, a named warning for
suspicious-but-usable input, nothing partial left in ``--out``.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Hang(Exception):
    """Raised by the alarm when a case runs past its time limit."""


@dataclass
class Outcome:
    """What one run left: exit code, captured output, and whether it hit the time limit or raised."""

    rc: int
    out: str
    err: str
    seconds: float
    timed_out: bool = False
    traceback: str = ""

    @property
    def text(self) -> str:
        """stdout and stderr together."""
        return self.out + self.err


def _on_alarm(signum, frame):  # noqa: ARG001
    raise Hang()


def run_cli(argv: list[str], timeout: float = 30.0, cwd: str | Path | None = None) -> Outcome:
    """``llmad ARGV`` in-process via ``llmad.cli.main`` with stdout/stderr captured and a SIGALRM time limit."""
    from llmad.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc, tb, timed_out = 0, "", False
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    here = os.getcwd()
    t0 = time.perf_counter()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Hang:
        rc, timed_out = -1, True
    except BaseException:  # noqa: BLE001 - an escaped exception is exactly what these tests look for
        rc, tb = 1, traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(here)
    return Outcome(rc, out.getvalue(), err.getvalue() + tb, time.perf_counter() - t0, timed_out, tb)


def run_cli_process(argv: list[str], timeout: float = 60.0, cwd: str | Path | None = None,
                    stdin: str | bytes | None = None, env: dict | None = None) -> Outcome:
    """``python -m llmad ARGV`` in a child process, killed at ``timeout``."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "llmad", *map(str, argv)], cwd=cwd or ROOT, input=data,
                           capture_output=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as e:
        return Outcome(-1, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace"),
                       time.perf_counter() - t0, timed_out=True)
    err = p.stderr.decode(errors="replace")
    return Outcome(p.returncode, p.stdout.decode(errors="replace"), err, time.perf_counter() - t0,
                   traceback=err if "Traceback (most recent call last)" in err else "")


def assert_no_crash(res: Outcome) -> None:
    """Neither a hang nor a traceback."""
    assert not res.timed_out, f"hung (>{res.seconds:.0f}s); output so far:\n{res.text[-2000:]}"
    assert not res.traceback and "Traceback (most recent call last)" not in res.text, res.text[-4000:]


def assert_user_error(res: Outcome, *needles: str) -> str:
    """Exit 2 with one ``llmad: error:`` line that contains every needle (file, row, field...); returns the line."""
    assert_no_crash(res)
    assert res.rc == 2, f"exit {res.rc}, expected 2:\n{res.text[-3000:]}"
    lines = [ln for ln in res.err.splitlines() if ln.startswith("llmad: error:")]
    assert len(lines) == 1, f"expected one error line:\n{res.err[-3000:]}"
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"
    return lines[0]


def assert_warned(res: Outcome, name: str) -> None:
    """A named warning (``warning: <name>`` or ``[<name>]``) reached the user, and the run did not crash."""
    assert_no_crash(res)
    assert name.lower() in res.text.lower(), f"warning {name!r} not shown:\n{res.text[-3000:]}"


def assert_nothing_partial(out: str | Path) -> None:
    """``--out`` was not left holding a half-written run: absent, empty, or without temporary files."""
    p = Path(out)
    if not p.exists():
        return
    if p.is_dir():
        stray = [q for q in p.rglob("*") if q.name.startswith(".tmp") or q.name.endswith((".tmp", ".part"))]
        assert not stray, f"partial files left in {p}: {stray[:5]}"
