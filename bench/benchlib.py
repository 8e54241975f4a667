"""What the benchmark scripts share: one run in a fresh process, so that each row's peak memory is its own and a
crash or a hang is recorded as that row's error instead of ending the benchmark."""
from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from typing import Any, Callable


def _child(fn: Callable[[Any], Any], arg: Any, q) -> None:
    try:
        q.put(("ok", fn(arg)))
    except Exception as e:  # keep the benchmark going; the failure is recorded
        q.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()[-800:]}"))


def in_child(fn: Callable[[Any], Any], arg: Any, timeout: float) -> tuple[str, Any, float]:
    """(``"ok"`` or ``"error"``, ``fn(arg)`` or the error text, wall seconds) of ``fn(arg)`` in a fresh spawned
    process; ``fn`` must be a module-level function (spawn pickles it by name)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, arg, q))
    t0 = time.time()
    p.start()
    try:
        status, payload = q.get(timeout=timeout)
    except Exception:
        p.kill()
        status, payload = "error", f"timeout after {timeout}s"
    p.join(5)
    return status, payload, time.time() - t0
