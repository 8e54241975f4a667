"""Ctrl-C prints one line saying what was kept and how to continue; ``sft --resume`` over a damaged checkpoint falls
back to the previous complete one (named warning) or names the damaged one (exit 2). Never a traceback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_run_frame, make_tiny_bert
from tests.badinput.runner import ROOT, assert_no_crash, assert_user_error, assert_warned, run_cli, run_cli_process


def test_ctrl_c_inside_a_command_prints_one_line(tmp_path, monkeypatch):
    """typer turns KeyboardInterrupt into exit code 130 under standalone_mode=False; main() still explains it."""
    import llmad.data.flowbench as fb
    from llmad.interrupts import note_run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fb, "load_jobs", interrupted)
    res = run_cli(["data", "info", "flowbench:whatever"])
    assert_no_crash(res)
    assert res.rc == 130 and res.err.strip() == "llmad: interrupted before this command wrote any output"

    def interrupted_after_noting(*a, **k):
        note_run(tmp_path / "run", "add --resume", kept="checkpoints")
        raise KeyboardInterrupt

    monkeypatch.setattr(fb, "load_jobs", interrupted_after_noting)
    res = run_cli(["data", "info", "flowbench:whatever"])
    assert res.rc == 130
    assert res.err.strip() == f"llmad: interrupted; kept checkpoints in {tmp_path / 'run'} (resume: add --resume)"
    # the next command starts with a clean slate
    monkeypatch.undo()
    res = run_cli(["data", "info", ""])
    assert res.rc == 2 and "interrupted" not in res.err


def _fake_checkpoint(d: Path, step: int) -> Path:
    """A structurally complete checkpoint-N: trainer_state.json, a tiny safetensors file, a torch zip."""
    import torch
    from safetensors.torch import save_file

    c = d / f"checkpoint-{step}"
    c.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(c / "model.safetensors"))
    torch.save({"step": step}, c / "optimizer.pt")
    (c / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return c


@pytest.mark.parametrize("damage", ["truncate-weights", "bad-state-json", "truncate-optimizer"])
def test_resume_skips_a_damaged_latest_checkpoint(tmp_path, damage):
    from llmad.detectors.sft.training import resume_checkpoint
    from llmad.errors import LlmadError, LlmadWarning

    _fake_checkpoint(tmp_path, 2)
    c4 = _fake_checkpoint(tmp_path, 4)
    f = {"truncate-weights": "model.safetensors", "bad-state-json": "trainer_state.json",
         "truncate-optimizer": "optimizer.pt"}[damage]
    raw = (c4 / f).read_bytes()
    (c4 / f).write_bytes(raw[: len(raw) // 2])
    with pytest.warns(LlmadWarning, match=rf"damaged-checkpoint.*checkpoint-4.*{f}.*checkpoint-2"):
        assert resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert (tmp_path / "damaged-checkpoint-4").is_dir() and not c4.exists()
    # with no earlier complete checkpoint left: one line naming the damaged one
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"\0" * 5)
    with pytest.raises(LlmadError, match=r"checkpoint-2 is damaged .*model.safetensors"):
        resume_checkpoint(tmp_path)


def _latest_steps(ckpts: Path) -> list[int]:
    return sorted(int(c.name.split("-")[1]) for c in ckpts.glob("checkpoint-*") if (c / "trainer_state.json").is_file())


def test_sigint_during_sft_then_resume_over_a_damaged_checkpoint(tmp_path):
    """A real SIGINT to `llmad sft` (tiny model, tiny runs) -> one line; then --resume with the newest checkpoint
    truncated falls back to the one before it and finishes."""
    data = tmp_path / "toywf"
    data.mkdir()
    for r in range(1, 10):
        make_run_frame(r, anomalous_host=None if r <= 3 else "worker1").to_csv(data / f"toywf-run{r:04d}.csv",
                                                                              index=False)
    model = make_tiny_bert(tmp_path / "tiny")
    out = tmp_path / "run"
    # --patience 0: no early stopping, so the run is still training when the signal comes (and ends at step 40)
    args = ["sft", "--model", model, "--data", f"flowbench:{data}", "--max-steps", "40", "--eval-steps", "2",
            "--patience", "0", "--batch-size", "8", "--out", out, "-q"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # SIGINT back to its default in the child: a background job (`pytest ... &`) inherits it ignored, and Python
    # then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-m", "llmad", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while len(_latest_steps(out / "checkpoints")) < 2:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoints appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 130, err[-3000:]
    assert f"llmad: interrupted; kept checkpoints in {out} (resume: add --resume" in err.strip().splitlines()[-1]
    assert not (out / "metrics.json").exists()

    steps = _latest_steps(out / "checkpoints")
    newest = out / "checkpoints" / f"checkpoint-{steps[-1]}" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    res = run_cli_process([*args, "--resume"], timeout=180, env={"TOKENIZERS_PARALLELISM": "false"})
    assert_warned(res, "damaged-checkpoint")
    assert res.rc == 0, res.text[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["steps"] == 40 and m["train"]["resumed_from"].endswith(f"checkpoint-{steps[-2]}")


def test_resume_with_every_checkpoint_damaged_is_one_line(tmp_path):
    c = _fake_checkpoint(tmp_path / "run" / "checkpoints", 6)
    (c / "trainer_state.json").write_text("{not json")
    res = run_cli(["sft", "--model", "minilm", "--data", "flowbench:1000genome",
                   "--max-steps", "1", "--out", tmp_path / "run", "--resume"], timeout=120)
    assert_user_error(res, "checkpoint-6", "trainer_state.json")
