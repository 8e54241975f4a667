"""The CLI's flag vocabulary as data: one name per idea, the old spellings that still work, each command's own flags.

Used by ``llmad.cli.options`` (old spellings are rewritten with a ``warning [deprecated-flag]``), by
``tests/cli/test_vocabulary.py`` (every option of every command is a vocabulary word or one of that command's own
flags) and by the README's vocabulary table (``tests/cli/test_readme.py`` checks it against :data:`VOCABULARY`).
"""
from __future__ import annotations

# Flags that mean the same thing on every command that has them: flag -> meaning (the README table).
VOCABULARY: dict[str, str] = {
    "--data": "dataset spec: `flowbench:<workflow>`, `nezha:trainticket`, `smd:<machine>`, `asd:<server>`, "
              "`csv:PATH`, your own job table `jobs:PATH` (`data info` and `render` also take it as the first "
              "argument)",
    "--columns": "column map (YAML) of a `jobs:PATH` table (default: `PATH.llmad.yaml`, else inferred and printed)",
    "--data-dir": "data folder (default: `$LLMAD_DATA_DIR`, `./data`, the checkout's `data/`, `../shared/data`)",
    "--split": "how the data is cut into train/validation/test (jobs: `run`, `paper`, `workflow`; a `jobs:` "
               "table without run ids: `time`, `row`; Nezha: `time`, `fault`)",
    "--part": "which part is used: `train`, `validation` or `test`",
    "--test-workflow": "the unseen workflow of `--split workflow`",
    "--seed": "seed of the split, of every seeded sample and of training",
    "--limit": "sample size of what is scored: N jobs (replay: runs; numeric: series; transfer: entities; "
               "windows-text, pretrain: windows), seeded",
    "--train-limit": "sample size of what a method learns from (train jobs, runs or tuning examples), seeded",
    "--val-limit": "sample size of the validation part that picks the threshold, seeded",
    "--model": "model: offline alias, hub id or folder; a saved detector (a run folder works too)",
    "--template": "Jinja template: a name under `prompts/` or a `.j2` path",
    "--method": "which detector",
    "--threshold": "how the decision threshold is chosen (from validation unless a number is given)",
    "--max-steps": "cap on training steps",
    "--lr": "learning rate",
    "--batch-size": "examples per batch",
    "--lora": "LoRA rank (0: none)",
    "--shots": "labelled examples shown or learned from (0: zero-shot)",
    "--quantize": "int8 dynamic quantization for scoring on CPU",
    "--backend": "scoring backend of SFT models",
    "--alert": "alert rule: `threshold`, or `k-of-n` with `--k` and `--n`",
    "--k": "k-of-n alerts: hits needed",
    "--n": "k-of-n alerts: window of observations",
    "--window": "metric-window length (points)",
    "--stride": "step between metric windows",
    "--view": "Nezha: `pod` (per service) or `system`",
    "--causal": "peer context from jobs finished earlier only",
    "--epochs": "passes over the training rows",
    "--precision": "training / scoring precision: `auto`, `fp32`, `bf16` (`fp16`: sft on CUDA)",
    "--load-in-4bit": "bitsandbytes NF4 base model (LoRA on top)",
    "--trust-remote-code": "allow model code from the hub",
    "--config": "a YAML file of options (the command line wins)",
    "--out": "where outputs go (a run folder, or a file where the command writes one)",
    "--quiet": "no progress output",
    "--force": "replace an existing output",
    "--resume": "continue an interrupted run",
    "--json": "print JSON instead of a table",
    "--help": "this command's help",
    "--version": "print the version",
}

# Short forms: each means one long flag on every command.
SHORT: dict[str, str] = {"-d": "--data", "-m": "--model", "-t": "--template", "-o": "--out", "-q": "--quiet",
                         "-k": "--shots", "-s": "--set", "-h": "--help", "-V": "--version"}

# Flags that belong to one command only (their help says what they do); a flag here must not be a synonym of a
# vocabulary word. A new flag goes into VOCABULARY (when another command could have it) or here.
OWN: dict[str, tuple[str, ...]] = {
    "": ("--install-completion", "--show-completion"),
    "data fetch": ("--manifest", "--base-url", "--timeout"),
    "data import": ("--infer", "--map-out"),
    "baseline": ("--features",),
    "sft": ("--max-length", "--freeze", "--init-from", "--prefix-augment", "--patience", "--eval-steps",
            "--max-time", "--class-weight", "--keep-checkpoints", "--collapse-retry",
            "--fusion"),
    "icl": ("--select", "--order", "--stats", "--mode", "--calibrate", "--train-shots",
            "--train-steps", "--train-demos", "--no-cache", "--max-new-tokens", "--max-prompt-tokens"),
    "nll": ("--fields", "--permutations", "--keep-layers", "--normal-only"),
    "replay": ("--reveal", "--speed", "--batch", "--workers"),
    "watch": ("--alerts", "--state", "--format", "--follow", "--poll", "--idle-exit", "--batch-lines", "--max-runs",
              "--checkpoint-s"),
    "numeric": ("--finetune", "--test-types"),
    "adapt": ("--target", "--sources", "--methods", "--source-jobs", "--shot-jobs", "--full-jobs", "--unlabeled-jobs",
              "--source-model", "--tree", "--save-models"),
    "transfer": ("--offline-fraction", "--new-days", "--n-clusters", "--alpha", "--distance-threshold",
                 "--transfer-steps", "--base-steps"),
    "pretrain moment": ("--seq-len", "--d-model", "--layers", "--heads", "--mask-ratio"),
    "compare": ("--set",),
}

# Old spellings still accepted (with a warning): command -> {old flag: new flag}.
DEPRECATED: dict[str, dict[str, str]] = {
    "predict": {"--int8": "--quantize"},
    "replay": {"--runs": "--limit", "--train-runs": "--train-limit", "--val-runs": "--val-limit"},
    "numeric": {"--limit-series": "--limit"},
    "pretrain moment": {"--steps": "--max-steps", "--max-windows": "--limit"},
    "render": {"--n": "--limit"},
    "icl": {"--train-examples": "--train-limit"},
}



def markdown_table() -> str:
    """The README's vocabulary table: ``| flag | meaning |``, one row per word, old spellings named."""
    old = {}
    for command, renames in DEPRECATED.items():
        for o, n in renames.items():
            old.setdefault(n, set()).add(f"{command} {o}")
    rows = ["| flag | meaning |", "|---|---|"]
    for flag, meaning in VOCABULARY.items():
        was = f" (was {', '.join(f'`{o}`' for o in sorted(old[flag]))})" if flag in old else ""
        rows.append(f"| `{flag}` | {meaning}{was} |")
    return "\n".join(rows)


def short_forms() -> str:
    """The short forms as README text: ``-d`` `--data`, ..."""
    return ", ".join(f"`{s}` `{long}`" for s, long in SHORT.items()) + "."


__all__ = ["VOCABULARY", "SHORT", "OWN", "DEPRECATED", "markdown_table", "short_forms"]
