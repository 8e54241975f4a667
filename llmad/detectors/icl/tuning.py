"""LoRA tuning of the ICL decoder on prompt -> label completions (trl's SFTTrainer, completion-only loss).

Tuning prompts are built exactly like scoring prompts (the run's demonstrations, or with ``train_demos=resample``
each prompt's own 0..train_shots of them); a time budget stops tuning early (the steps done are recorded); a model
that already carries a trainable adapter keeps training it, so tuning can run in several short rounds.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from llmad.detectors.icl.demos import demo_reasons, nearest_demos, select_demonstrations, typical_values
from llmad.detectors.icl.scoring import base_model
from llmad.errors import LlmadError


class LoraTuner:
    """LoRA tuning, mixed into ``ICLDetector``: uses its ``config``, ``lm_``, ``demos_``, ``render``, ``prepare``,
    ``neighbours`` and ``_prefix_cache``; sets ``tuning_``."""

    def tuning_examples(self, train: pd.DataFrame) -> pd.DataFrame:
        """Prompt -> label completions from the train part (balanced, demonstrations excluded, seeded); in cot mode
        the completion is a rationale from the job's own values, then ``Answer: <label>``."""
        cfg = self.config
        pool = train
        if self.demos_ is not None and len(self.demos_) and "job_id" in train:
            pool = train[~train["job_id"].astype(str).isin(set(self.demos_["job_id"]))]
        rng = np.random.default_rng(cfg.seed + 3)
        n = min(cfg.train_examples, len(pool))
        idx_n = np.flatnonzero(pool["label"].to_numpy() == 0)
        idx_a = np.flatnonzero(pool["label"].to_numpy() == 1)
        n_a = min(len(idx_a), n // 2)
        n_n = min(len(idx_n), n - n_a)
        chosen = np.concatenate([rng.choice(idx_n, n_n, replace=False), rng.choice(idx_a, n_a, replace=False)])
        rng.shuffle(chosen)
        rows = pool.iloc[chosen]
        texts = self.render(rows)
        own = None
        if cfg.select == "nearest" and cfg.train_demos == "resample":
            own = self._resampled_neighbours(rows, rng)
        elif cfg.select == "nearest" and cfg.shots > 0:
            own = self.neighbours(rows, cfg.shots, exclude_self=True)
        elif cfg.train_demos == "resample":
            rest = pool.iloc[np.setdiff1d(np.arange(len(pool)), chosen)].reset_index(drop=True)
            own = self._resampled_demos(rest, len(rows), rng)
        cot = cfg.mode == "cot"
        groups, kept = self.prepare(texts, mode="cot" if cot else "score", own_demos=own)
        prompts: list[str | None] = [None] * len(texts)
        for g in groups:
            for r, body in zip(g.rows, g.bodies):
                prompts[r] = g.prefix_text + body
        words = cfg.label_words
        labels = rows["label"].to_numpy().astype(int)
        if cot:
            # The target rationale states the job's own facts (demos.demo_reasons, label-free), then the answer line:
            # a tuned model then writes "Answer: <label>" itself instead of looping (bench/results/icl_cot.md).
            reasons = demo_reasons(rows, self.features, typical_values(train, self.features))
            completions = [f" {why}\nAnswer: {words[y]}" for why, y in zip(reasons, labels)]
        else:
            completions = [" " + words[y] for y in labels]
        keep = [i for i, p in enumerate(prompts) if p is not None]
        job_ids = rows["job_id"].astype(str).to_numpy() if "job_id" in rows else np.array([""] * len(rows))
        return pd.DataFrame({"job_id": job_ids[keep], "prompt": [prompts[i] for i in keep],
                             "completion": [completions[i] for i in keep], "label": labels[keep]})

    def _resampled_neighbours(self, rows: pd.DataFrame, rng: np.random.Generator) -> list[list[tuple]]:
        """Per tuning prompt, its own k nearest train rows, k drawn in 0..train_shots, itself excluded: one adapter
        then serves every shot count of a nearest-neighbour shots curve."""
        cfg = self.config
        kmax = cfg.train_shots if cfg.train_shots is not None else cfg.shots
        # Nearest last (order "fixed"), so the k nearest of the kmax are the last k.
        full = nearest_demos(self.pool_, rows, self.features, kmax, "fixed", cfg.seed, exclude_self=True)
        out = []
        for demos in full:
            k = int(rng.integers(0, kmax + 1))
            picked = demos[len(demos) - k:] if k else []
            if cfg.order == "shuffled" and len(picked) > 1:
                picked = [picked[i] for i in rng.permutation(len(picked))]
            out.append(picked)
        return out

    def _resampled_demos(self, pool: pd.DataFrame, n: int, rng: np.random.Generator) -> list[list[tuple[str, int]]]:
        """Per tuning prompt, its own 0..train_shots demonstrations drawn from ``pool`` with ``select``."""
        cfg = self.config
        kmax = cfg.train_shots if cfg.train_shots is not None else cfg.shots
        picks = []
        for _ in range(n):
            k = int(rng.integers(0, kmax + 1))
            try:
                d = select_demonstrations(pool, k, cfg.select, seed=int(rng.integers(2**31)))
            except LlmadError:  # a class too small for k: fewer demonstrations rather than none at all
                d = select_demonstrations(pool, min(k, len(pool)), "random", seed=int(rng.integers(2**31)))
            picks.append(list(d.index))
        needed = pd.Index(sorted({i for p in picks for i in p}))
        texts = dict(zip(needed, self.render(pool.loc[needed]))) if len(needed) else {}
        labels = pool["label"].astype(int)
        if cfg.mode == "cot" and len(needed):
            why = dict(zip(needed, demo_reasons(pool.loc[needed], self.features,
                                                typical_values(pool, self.features))))
            return [[(texts[i], int(labels.loc[i]), why[i]) for i in p] for p in picks]
        return [[(texts[i], int(labels.loc[i])) for i in p] for p in picks]

    def tune(self, train: pd.DataFrame) -> None:
        """LoRA on prompt -> label completions with trl's SFTTrainer (completion-only loss)."""
        import tempfile

        import datasets
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import PrinterCallback
        from trl import SFTConfig, SFTTrainer

        from llmad.models.causal_lm import context_window
        from llmad.models.callbacks import time_budget_callback
        from llmad.models.resolve import pick_device_dtype

        cfg = self.config
        saved_demos = self.demos_
        if cfg.train_shots is not None and cfg.select != "nearest" and cfg.train_demos == "fixed":
            self.demos_ = saved_demos.iloc[:cfg.train_shots]
        self._prefix_cache = {}
        try:
            ex = self.tuning_examples(train)
        finally:
            self.demos_ = saved_demos
            self._prefix_cache = {}
        if len(ex) == 0:
            raise LlmadError("no tuning examples: the train part is empty")
        tok = self.lm_.tokenizer
        lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in ex["prompt"]]
        prompt_tokens = {"mean": float(np.mean(lens)), "min": int(np.min(lens)), "max": int(np.max(lens)),
                         "total": int(np.sum(lens))}
        device, _, flags = pick_device_dtype()
        model = self.lm_.model
        from peft import PeftModel

        n_layers = next((v for a in ("num_hidden_layers", "n_layer") if isinstance(
            v := getattr(base_model(model).config, a, None), int)), None)
        layers = None
        if cfg.lora_layers and n_layers and cfg.lora_layers < n_layers:
            layers = list(range(n_layers - cfg.lora_layers, n_layers))
        targets: Any = "all-linear"
        if layers:
            # peft takes a layer subset only with explicit module names: every linear layer but the output head.
            targets = sorted({n.rsplit(".", 1)[-1] for n, mod in base_model(model).named_modules()
                              if type(mod).__name__ in ("Linear", "Conv1D") and not n.endswith("lm_head")})
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=0.05,
                          target_modules=targets, task_type="CAUSAL_LM", layers_to_transform=layers)
        # A model that already carries a trainable adapter (a saved one, reloaded) keeps training it: tuning can
        # then run in several short rounds.
        continuing = isinstance(model, PeftModel)
        steps = cfg.train_steps if cfg.train_steps else max(1, math.ceil(len(ex) / cfg.train_batch_size))
        with tempfile.TemporaryDirectory(prefix="llmad-icl-lora-") as tmp:
            args = SFTConfig(output_dir=tmp, max_steps=steps, per_device_train_batch_size=cfg.train_batch_size,
                             learning_rate=cfg.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                             logging_steps=max(1, steps // 10), save_strategy="no", report_to=[],
                             completion_only_loss=True, max_length=context_window(model), seed=cfg.seed,
                             bf16=flags["bf16"] and device == "cuda", fp16=flags["fp16"] and device == "cuda",
                             dataloader_num_workers=0, disable_tqdm=True, use_cpu=(device == "cpu"),
                             gradient_checkpointing=False)
            ds = Dataset.from_pandas(ex[["prompt", "completion"]], preserve_index=False)
            callbacks = [time_budget_callback(cfg.train_budget_s)] if cfg.train_budget_s else None
            # trl tokenizes through datasets.map, whose bars (and, without tqdm, the Trainer's printed loss dicts)
            # would flood a quiet run; tuning_["losses"] keeps the losses.
            bars = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()
            try:
                trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=self.lm_.tokenizer,
                                     peft_config=None if continuing else lora, callbacks=callbacks)
            finally:
                if bars:
                    datasets.enable_progress_bars()
            trainer.remove_callback(PrinterCallback)
            result = trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        self.lm_.model = trainer.model
        self.lm_.model.eval()
        done = int(trainer.state.global_step)
        seen = min(len(ex), done * cfg.train_batch_size)
        self.tuning_ = {"examples": int(len(ex)), "positives": int(ex["label"].sum()), "steps": done,
                        "planned_steps": int(steps), "examples_seen": int(seen),  # the trainer's sampler picks which
                        "train_loss": float(result.training_loss), "losses": losses,
                        "base_4bit": bool(cfg.load_in_4bit), "lora_r": cfg.lora_r,
                        "train_shots": cfg.train_shots if cfg.train_shots is not None else cfg.shots,
                        "train_demos": cfg.train_demos, "prompt_tokens": prompt_tokens,
                        "lora_layers": layers, "continued": continuing}
        self._prefix_cache = {}
