"""``ICLConfig``: the options of ``llmad icl`` / an ``icl`` recipe entry, each with its help text, and their check."""
from __future__ import annotations

from dataclasses import dataclass

from llmad.config import option
from llmad.errors import LlmadError

SELECTIONS = ("random", "balanced", "negative", "positive", "nearest")
ORDERS = ("shuffled", "fixed")
MODES = ("score", "generate", "cot")
CALIBRATIONS = ("none", "content-free")
THRESHOLDS = ("validation", "argmax")
TRAIN_DEMOS = ("fixed", "resample")


@dataclass
class ICLConfig:
    """Options of ``llmad icl`` (one field per CLI option)."""

    model: str = option("smollm2-135m", "offline alias, HF hub id or local folder")
    shots: int = option(4, "demonstrations in the prompt (0 = zero-shot)")
    select: str = option("balanced", "random | balanced | negative | positive | nearest (from the train part)")
    order: str = option("shuffled", "shuffled | fixed demonstration order")
    stats: bool = option(False, "add per-class feature statistics of train")
    mode: str = option("score", "score (label log-probs) | generate | cot")
    calibrate: str = option("none", "none | content-free (contextual calibration)")
    template: str = option("paper", "job template: paper | compact | PATH.j2 (prompts/job/<name>.j2 or a path)")
    label_words: tuple[str, str] = option(("Normal", "Abnormal"), "the two label words (normal, abnormal)",
                                          cli=False)
    case_variants: bool = option(False, 'also score "normal"/"abnormal" (more label sequences, slower)', cli=False)
    threshold: str = option("validation", "validation | argmax (score mode; generate/cot use the parsed label)")
    load_in_4bit: bool = option(False, "bitsandbytes NF4 base model (CPU or CUDA)")
    lora_r: int = option(0, "LoRA rank for tuning on prompt -> label completions (cot: rationale + answer line; "
                            "0 = none)", flag="--lora")
    lora_alpha: int | None = option(None, "LoRA alpha (None: 2 * rank)", cli=False)
    train_examples: int = option(64, "tuning examples from the train part", flag="--train-limit")
    train_steps: int | None = option(None, "optimizer steps (default: one pass over train_examples)")
    train_batch_size: int = option(4, "tuning examples per optimizer step", cli=False)
    learning_rate: float = option(2e-4, "LoRA learning rate", flag="--lr")
    train_shots: int | None = option(None, "demonstrations in tuning prompts (default: --shots)")
    # fixed: every tuning prompt has the run's demonstrations; resample: each tuning prompt draws its own
    # (0..train_shots of them, with ``select``, from train rows that are not tuning examples), so that one
    # adapter serves zero-, one- and few-shot prompts alike.
    train_demos: str = option("fixed", "fixed (the run's demonstrations) | resample (own 0..--train-shots per "
                                       "tuning prompt)")
    train_budget_s: float | None = option(None, "stop tuning after this many seconds (the steps done are recorded)",
                                          cli=False)
    # LoRA on the last N decoder layers only (None: all): the backward pass then stops there, which makes a
    # CPU tuning step about twice as cheap on a 30-layer model.
    lora_layers: int | None = option(None, "LoRA on the last N decoder layers only (None: all)", cli=False)
    batch_size: int = option(8, "queries per forward pass")
    # On: the prompt prefix's KV cache is computed once and reused for every query (same scores, tested).
    use_cache: bool = option(True, "re-encode the whole prompt per job (slow path)", flag="--no-cache")
    max_new_tokens: int = option(8, "generation length [8 for generate, 160 for cot]", flag="--max-new-tokens")
    cot_max_new_tokens: int = option(160, "generation length in cot mode (set by --max-new-tokens too)",
                                     flag="--max-new-tokens")
    # Over the generated tokens only (llmad.detectors.icl.cot says why not HF's own options): a 135M model's
    # greedy rationale otherwise loops until max_new_tokens and never writes its Answer: line. An 8-gram ban without
    # a penalty beat a 4-gram ban with penalty 1.2 on validation rows, untuned (answer lines 80% vs 40%) and tuned
    # (100% vs 95%): a rationale repeats short phrases by design (bench/results/icl_cot_decoding.md).
    repetition_penalty: float = option(1.0, "cot: penalty on tokens the rationale already used (1 = off; label "
                                            "words and the Answer cue exempt)", cli=False)
    no_repeat_ngram: int = option(8, "cot: no n-gram of this many tokens twice in a rationale (0 = off)", cli=False)
    max_prompt_tokens: int | None = option(None, "prompt budget (default: the model's context window)")
    seed: int = option(0, "seed of demonstration selection, order and tuning")
    trust_remote_code: bool = option(False, "allow model code from the hub")

    def validate(self) -> "ICLConfig":
        """Check option values; raise LlmadError with the allowed values."""
        for name, allowed in (("select", SELECTIONS), ("order", ORDERS), ("mode", MODES),
                              ("calibrate", CALIBRATIONS), ("threshold", THRESHOLDS),
                              ("train_demos", TRAIN_DEMOS)):
            if getattr(self, name) not in allowed:
                raise LlmadError(f"--{name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if self.shots < 0:
            raise LlmadError("--shots must be >= 0")
        if self.repetition_penalty <= 0 or self.no_repeat_ngram < 0:
            raise LlmadError("repetition_penalty must be > 0 and no_repeat_ngram >= 0")
        if self.lora_r < 0 or self.train_examples < 0:
            raise LlmadError("--lora and --train-limit must be >= 0")
        if len(self.label_words) != 2 or not all(str(w).strip() for w in self.label_words):
            raise LlmadError("label words: expected two non-empty words (normal, abnormal)")
        if self.label_words[0].strip().lower() == self.label_words[1].strip().lower():
            raise LlmadError("label words must differ")
        if self.calibrate != "none" and self.mode != "score":
            raise LlmadError("--calibrate content-free corrects label probabilities: use it with --mode score")
        if self.calibrate != "none" and self.select == "nearest" and self.shots > 0:
            raise LlmadError("--calibrate content-free needs one prompt for all jobs; --select nearest builds one "
                             "per job (use random, balanced, negative or positive)")
        self.label_words = tuple(str(w).strip() for w in self.label_words)  # type: ignore[assignment]
        return self
