"""Trainer callbacks shared by the methods that fine-tune (SFT, ICL's LoRA tuning)."""
from __future__ import annotations


def time_budget_callback(seconds: float | None, save: bool = False):
    """A ``TrainerCallback`` that stops training after ``seconds`` (checked per optimizer step); ``save`` also writes
    a checkpoint there, so ``--resume`` continues from that step. Its ``paused`` attribute says whether it fired."""
    import time

    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self):
            self.seconds, self.save, self.t0, self.paused = seconds, save, time.monotonic(), False

        def on_step_end(self, args, state, control, **kw):
            if self.seconds is not None and time.monotonic() - self.t0 > self.seconds:
                self.paused = True
                control.should_training_stop = True
                # Save only (a validation pass can cost minutes); resume continues from this step.
                control.should_save = control.should_save or self.save
            return control

    return TimeBudget()
