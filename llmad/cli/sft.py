"""`llmad sft --model minilm --data flowbench:1000genome` fine-tunes an encoder classifier on job sentences;
`llmad predict --model runs/sft/.../model --data flowbench:montage` scores jobs with a saved model.

Multi-process (DDP over gloo on CPU, NCCL on GPUs): `torchrun --nproc_per_node 2 -m llmad sft ...`
(or `accelerate launch` with a MULTI_CPU/MULTI_GPU accelerate config). Rank 0 writes the outputs.
"""
from __future__ import annotations

from typing import Optional

import typer

from llmad.cli import app


@app.command()
def sft(
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="offline alias (minilm), HF hub id or local folder [minilm]"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="dataset spec [flowbench:1000genome]"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="data folder (default: found automatically)"),
    template: Optional[str] = typer.Option(None, "--template", "-t",
                                           help="paper | compact | context | PATH.j2 [compact]"),
    split: Optional[str] = typer.Option(None, "--split", help="run | paper | workflow [run]"),
    test_workflow: Optional[str] = typer.Option(None, "--test-workflow", help="unseen workflow for --split workflow"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="subsample each split part to N jobs (quick runs)"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="subsample train only to N jobs (seeded)"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    max_length: Optional[int] = typer.Option(None, "--max-length",
                                             help="token budget per job [fits the longest train sentences]"),
    freeze: Optional[str] = typer.Option(None, "--freeze",
                                         help="none | embeddings | N-layers | encoder [embeddings]"),
    lora: Optional[int] = typer.Option(None, "--lora", help="LoRA rank (0 = no LoRA)"),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="start from a saved llmad SFT model"),
    prefix_augment: Optional[bool] = typer.Option(None, "--prefix-augment/--no-prefix-augment",
                                                  help="also train on partial jobs (for streaming)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after N optimizer steps"),
    eval_steps: Optional[int] = typer.Option(None, "--eval-steps", help="validate + checkpoint every N steps"),
    patience: Optional[int] = typer.Option(None, "--patience", help="early-stopping patience (0 = off)"),
    max_time: Optional[float] = typer.Option(None, "--max-time",
                                             help="pause after N seconds with a checkpoint (continue with --resume)"),
    threshold: Optional[str] = typer.Option(None, "--threshold", help="f1 | accuracy | youden | argmax [f1]"),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="auto | fp32 | bf16 | fp16 [auto: CUDA bf16/fp16, CPU fp32; "
                                                 "bf16 on an AMX/AVX512-BF16 CPU trains ~1.5x faster]"),
    class_weight: Optional[str] = typer.Option(None, "--class-weight",
                                               help="none | balanced (weight the loss by inverse class frequency) "
                                                    "[none]"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="allow model code from the hub"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML with data:/sft: sections (options override)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="output folder [runs/sft/<data>-<time>]"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Fine-tune an encoder classifier on job sentences (HF Trainer); save the model and test metrics."""
    from llmad.config import DataConfig, from_dict, load_yaml, merge
    from llmad.detectors.sft.detector import parse_freeze
    from llmad.models.resolve import check_precision, resolve_model
    from llmad.api.sft import SFTRunConfig, run_sft

    base = from_dict(SFTRunConfig, load_yaml(config), where=config) if config else SFTRunConfig()
    if config is None:
        base.data = DataConfig(spec="flowbench:1000genome", split="run")
    d = merge(base.data, {"spec": data, "data_dir": data_dir, "split": split, "test_workflow": test_workflow,
                          "seed": seed, "limit": limit})
    s = merge(base.sft, {"model": model, "template": template, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                         "max_length": max_length, "freeze": freeze, "lora": lora, "init_from": init_from,
                         "prefix_augment": prefix_augment, "max_steps": max_steps, "eval_steps": eval_steps,
                         "early_stopping_patience": patience, "max_time_s": max_time, "train_limit": train_limit,
                         "threshold_objective": threshold, "seed": seed, "precision": precision,
                         "class_weight": class_weight,
                         "trust_remote_code": trust_remote_code or None, "progress": False if quiet else None})
    parse_freeze(s.freeze)
    check_precision(s.precision)  # before any data is loaded
    if not s.init_from:
        resolve_model(s.model)  # offline hub ids fail here, before any data is loaded
    cfg = SFTRunConfig(data=d, sft=s, out=out or base.out, resume=resume,
                       keep_checkpoints=keep_checkpoints or base.keep_checkpoints, save_model=base.save_model)
    run_sft(cfg, printer=typer.echo)


@app.command()
def predict(
    model: str = typer.Option(..., "--model", "-m", help="a model folder written by llmad sft (<out>/model)"),
    data: str = typer.Option(..., "--data", "-d", help="dataset spec, e.g. flowbench:montage"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
    split: Optional[str] = typer.Option(None, "--split", help="score one part of this split (default: all jobs)"),
    part: str = typer.Option("test", "--part", help="train | validation | test (with --split)"),
    test_workflow: Optional[str] = typer.Option(None, "--test-workflow"),
    seed: int = typer.Option(0, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="score a seeded sample of N jobs"),
    int8: bool = typer.Option(False, "--int8", help="dynamic int8 quantized scoring on CPU"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="output folder [runs/predict/<data>-<time>]"),
) -> None:
    """Score jobs with a saved SFT model: predictions.csv, and metrics when labels are present."""
    from llmad.api.sft import run_predict

    run_predict(model, data, data_dir=data_dir, split=split, part=part, seed=seed, test_workflow=test_workflow,
                limit=limit, out=out, quantize=int8, printer=typer.echo)
