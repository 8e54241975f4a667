"""`llmad icl --model smollm2-135m --shots 4 --data flowbench:1000genome` classifies jobs in context with a
decoder LLM (zero/one/few-shot, label-word scoring or generation or chain-of-thought, content-free calibration,
optional 4-bit + LoRA tuning); writes config.json, metrics.json, predictions.csv (and reasoning.jsonl for CoT).
"""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli import app


@app.command()
def icl(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="offline alias, HF hub id or local folder"),
    shots: int = typer.Option(4, "--shots", "-k", help="demonstrations in the prompt (0 = zero-shot)"),
    data: str = typer.Option("flowbench:1000genome", "--data", "-d", help="dataset spec"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="data folder (default: found automatically)"),
    split: str = typer.Option("run", "--split", help="run | paper | workflow"),
    test_workflow: Optional[str] = typer.Option(None, "--test-workflow", help="unseen workflow for --split workflow"),
    select: str = typer.Option("balanced", "--select",
                               help="random | balanced | negative | positive | nearest (from the train part)"),
    order: str = typer.Option("shuffled", "--order", help="shuffled | fixed demonstration order"),
    stats: bool = typer.Option(False, "--stats/--no-stats", help="add per-class feature statistics of train"),
    mode: str = typer.Option("score", "--mode", help="score (label log-probs) | generate | cot"),
    calibrate: str = typer.Option("none", "--calibrate", help="none | content-free (contextual calibration)"),
    template: str = typer.Option("paper", "--template", "-t", help="job template: paper | compact | PATH.j2"),
    threshold: str = typer.Option("validation", "--threshold", help="validation | argmax (score mode)"),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="bitsandbytes NF4 base model (CPU or CUDA)"),
    lora: int = typer.Option(0, "--lora", help="LoRA rank for tuning on prompt -> label completions (0 = none)"),
    train_examples: int = typer.Option(64, "--train-examples", help="tuning examples from the train part"),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", help="optimizer steps (default: one pass)"),
    train_shots: Optional[int] = typer.Option(None, "--train-shots",
                                              help="demonstrations in tuning prompts (default: --shots)"),
    train_demos: str = typer.Option("fixed", "--train-demos",
                                    help="fixed (the run's demonstrations) | resample (own 0..--train-shots per "
                                         "tuning prompt)"),
    lr: float = typer.Option(2e-4, "--lr", help="LoRA learning rate"),
    batch_size: int = typer.Option(8, "--batch-size", help="queries per forward pass"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens",
                                                 help="generation length [8 for generate, 160 for cot]"),
    no_cache: bool = typer.Option(False, "--no-cache", help="re-encode the whole prompt per job (slow path)"),
    max_prompt_tokens: Optional[int] = typer.Option(None, "--max-prompt-tokens",
                                                    help="prompt budget (default: the model's context window)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="test rows (seeded subsample)"),
    val_limit: int = typer.Option(200, "--val-limit", help="validation rows scored to pick the threshold"),
    seed: int = typer.Option(0, "--seed"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="allow model code from the hub"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="output folder [runs/icl/<model>-<k>shot-<time>]"),
) -> None:
    """In-context learning with a decoder LLM; metrics on the test part, threshold from validation."""
    from llmad.detectors.icl.detector import ICLConfig, ICLRun, run_icl
    from llmad.errors import LlmadError
    from llmad.models.resolve import resolve_model

    if limit is not None and limit <= 0:
        raise LlmadError("--limit must be positive")
    cfg = ICLConfig(model=model, shots=shots, select=select, order=order, stats=stats, mode=mode,
                    calibrate=calibrate, template=template, threshold=threshold, load_in_4bit=load_in_4bit,
                    lora_r=lora, train_examples=train_examples, train_steps=train_steps, train_shots=train_shots,
                    train_demos=train_demos, learning_rate=lr, batch_size=batch_size, use_cache=not no_cache,
                    max_prompt_tokens=max_prompt_tokens, seed=seed, trust_remote_code=trust_remote_code)
    if max_new_tokens is not None:
        if max_new_tokens <= 0:
            raise LlmadError("--max-new-tokens must be positive")
        cfg.max_new_tokens = cfg.cot_max_new_tokens = max_new_tokens
    cfg.validate()
    resolve_model(model)  # an unreachable hub id fails here, before any data is loaded
    run = ICLRun(data=data, data_dir=data_dir, split=split, test_workflow=test_workflow, seed=seed, limit=limit,
                 val_limit=val_limit, out=out)
    run_icl(cfg, run, printer=typer.echo)
