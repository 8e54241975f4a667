"""Settings of the fused (LM + numbers) detectors: ``StackConfig`` (the stacked tree) and ``FusionConfig`` (a
recipe's ``method: fusion`` entry). Light on purpose: CLI help and recipe checks import it without sklearn/torch."""
from __future__ import annotations

from dataclasses import dataclass

from llmad.config import option
from llmad.errors import LlmadError
from llmad.detectors.sft.config import SFTConfig

FUSION_KINDS = ("none", "stack")
TREES = ("auto", "rf", "hgb")
FEATURE_SETS = ("auto", "plain", "context")
TEST_LMS = ("full", "folds")


@dataclass
class StackConfig:
    """Settings of the stacked tree (the LM's are an ``SFTConfig``)."""

    folds: int = option(3, "cross-fitting folds, by run (K LMs on K-1 folds each, plus one on all train rows)")
    tree: str = option("auto", "rf | hgb | auto (fit both, keep the better on validation); built as the baselines")
    n_estimators: int = option(300, "trees (rf) or boosting iterations (hgb), as the baselines")
    features: str = option("auto", "plain | context (+ peer-context) | auto (both tried with each tree, the best on "
                                   "validation kept): the numbers beside the LM score")
    test_lm: str = option("folds", "which LMs score validation and test: folds (the mean of the K fold LMs: no extra "
                                   "LM to train, and the tree reads the kind of score it was fitted on; scoring runs "
                                   "K LMs per job) | full (one more LM on all train rows, K+1 LMs to train, one to "
                                   "score; before Nov 2026 the only way)")

    def check(self) -> "StackConfig":
        """Fail in one line before any LM trains when a setting is out of range."""
        if self.folds < 2 or self.tree not in TREES or self.features not in FEATURE_SETS or \
                self.test_lm not in TEST_LMS:
            raise LlmadError(f"fusion stack: folds {self.folds}, tree {self.tree!r}, features {self.features!r}, "
                             f"test_lm {self.test_lm!r}: expected folds >= 2, tree one of {', '.join(TREES)}, "
                             f"features one of {', '.join(FEATURE_SETS)}, test_lm one of {', '.join(TEST_LMS)}")
        return self


@dataclass
class FusionConfig:
    """A recipe's ``method: fusion`` entry: the stack and its LM (``seed`` set by the harness for both)."""

    kind: str = option("stack", "stack (the one fusion so far)")
    stack: StackConfig = option(help="the stacked tree", factory=StackConfig)
    sft: SFTConfig = option(help="the LM's fine-tuning settings", factory=SFTConfig)
    seed: int = option(0, "seed of the LMs, the folds and the tree")


__all__ = ["StackConfig", "FusionConfig", "FUSION_KINDS", "TREES", "FEATURE_SETS", "TEST_LMS"]
