"""``NLLConfig``: the options of ``llmad nll`` / an ``nll`` recipe entry, each with its help text; the threshold
rules and the field sets."""
from __future__ import annotations

from dataclasses import dataclass

from llmad.config import option
from llmad.errors import LlmadError

FIELD_SETS = ("paper", "context")
PRECISIONS = ("auto", "fp32", "bf16")
THRESHOLD_RULES = "validation | contamination:Q | train-quantile:Q | a number"


@dataclass
class NLLConfig:
    """Options of ``llmad nll`` (one field per CLI option)."""

    model: str = option("smollm2-135m", "causal LM: offline alias, HF hub id or local folder")
    template: str = option("job", "serialization template: prompts/nll/<name>.j2 or a .j2 path (window: for "
                                  "metric windows)")
    # ops = the task, runtime, CPU time and the label-free peer/host ratios of llmad.data.context: a slow job is only
    # visible against its peers and its host's other jobs; context = the nine paper features + all peer facts.
    fields: str = option("ops", "job fields: ops (task, runtime, cpu and peer/host ratios) | context (the 9 "
                                "sentence features + task + every peer/host fact) | paper | a comma list of columns")
    permutations: int = option(3, "field orders averaged per scored row")
    epochs: float = option(1.0, "passes over the train rows (each pass a fresh field order per row)")
    max_steps: int | None = option(None, "cap on optimizer steps (None: the epochs decide)")
    lora_r: int = option(8, "LoRA rank (0: full fine-tuning)", flag="--lora")
    lora_alpha: int | None = option(None, "LoRA alpha (None: 2 * rank)", cli=False)
    learning_rate: float = option(1e-3, "learning rate (full fine-tuning: try 1e-4)", flag="--lr")
    batch_size: int = option(16, "training rows per optimizer step")
    eval_batch_size: int = option(64, "rows per forward pass when scoring", cli=False)
    # SmolLM2-135M has 30 decoder layers; on 2 CPU cores scoring all of them is ~10 jobs/s. The first few layers
    # of the pretrained model, fine-tuned, are most of the signal at a fraction of the cost (bench/unsupervised.py).
    keep_layers: int | None = option(None, "keep the first N decoder layers of the model (speed; None: all)")
    precision: str = option("auto", "auto (CUDA bf16; CPU bf16 only with AMX/AVX512-BF16, else fp32) | fp32 | bf16")
    load_in_4bit: bool = option(False, "bitsandbytes NF4 base model (LoRA on top)")
    normal_only: bool = option(False, "semi-supervised: train on rows labelled normal only", flag="--normal-only")
    train_limit: int | None = option(None, "train rows learned from (seeded sample; None: all)")
    # mean: AnoLLM's score (the mean value NLL); z: each field's NLL standardised by its train mean and std first,
    # so that fields whose values are hard to predict for every row (byte counts) do not drown the rest.
    aggregate: str = option("mean", "mean (value NLL over fields) | z (field NLL standardised on train, then mean)",
                            cli=False)
    threshold: str = option("contamination:0.05", "validation (labels) | contamination:Q (top Q of held-out "
                                                  "validation scores, labels unused) | train-quantile:Q | a number")
    threshold_rows: int = option(256, "train rows scored for train-quantile and the per-field baselines", cli=False)
    sig_digits: int = option(3, "significant digits of serialized numbers", cli=False)
    missing: str = option("missing", "how a missing value is written ('': the field is left out)", cli=False)
    max_value_chars: int = option(48, "longer values are cut (with a warning)", cli=False)
    max_length: int = option(384, "tokens per serialized row (longer rows are cut, with a warning)", cli=False)
    window_stats: tuple[str, ...] = option(("mean", "max"), "metric windows: per-feature statistics serialized",
                                           cli=False)
    causal: bool = option(False, "peer facts from jobs finished earlier only")
    seed: int = option(0, "seed of the train sample, field orders and training")
    progress: bool = option(True, "training progress output", cli=False)
    trust_remote_code: bool = option(False, "allow model code from the hub")

    def validate(self) -> "NLLConfig":
        """Check option values; raise LlmadError with the allowed values."""
        if self.permutations < 1:
            raise LlmadError(f"--permutations {self.permutations}: expected >= 1")
        if self.lora_r < 0:
            raise LlmadError(f"--lora {self.lora_r}: expected >= 0 (0: full fine-tuning)")
        if self.load_in_4bit and self.lora_r == 0:
            raise LlmadError("--load-in-4bit trains LoRA adapters on a frozen 4-bit model: use --lora R (R > 0)")
        if not self.epochs > 0 and not self.max_steps:
            raise LlmadError(f"--epochs {self.epochs}: expected > 0")
        if self.aggregate not in ("mean", "z"):
            raise LlmadError(f"aggregate {self.aggregate!r}: expected mean or z")
        if self.precision not in PRECISIONS:
            raise LlmadError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.keep_layers is not None and self.keep_layers < 1:
            raise LlmadError(f"--keep-layers {self.keep_layers}: expected >= 1")
        if self.sig_digits < 1:
            raise LlmadError(f"sig_digits {self.sig_digits}: expected >= 1")
        parse_threshold(self.threshold)
        return self


def parse_threshold(rule: str) -> tuple[str, float | None]:
    """``validation`` | ``contamination:Q`` | ``train-quantile:Q`` | a number -> (name, value)."""
    text = str(rule).strip().lower()
    if text in ("validation", "val"):
        return "validation", None
    for name, lo, hi in (("contamination", 0.0, 0.5), ("train-quantile", 0.5, 1.0)):
        if text.startswith(name + ":"):
            try:
                q = float(text.split(":", 1)[1])
            except ValueError:
                q = float("nan")
            if lo < q < hi:
                return name, q
            raise LlmadError(f"--threshold {rule!r}: {name}:Q needs {lo:g} < Q < {hi:g}")
    try:
        return "number", float(text)
    except ValueError:
        raise LlmadError(f"--threshold {rule!r}: expected {THRESHOLD_RULES}") from None
