"""OmniTransfer's adaptive transfer of a cluster base model to a new entity, for any torch window detector that
follows the transfer protocol:

- the torch module is ``detector.model_``; ``generic_prefixes`` names the parameters of its generic layers
  (the LSTM encoder, MOMENT's patch embedding and encoder);
- with ``warm_start=True`` (sklearn's name; ``adapt`` sets it on its copy) ``_fit`` keeps the ``model_`` set before
  ``fit`` and trains only its ``requires_grad`` tensors; a plain ``fit`` starts over, as sklearn's does;
- ``max_steps`` caps optimizer steps (``epochs`` is lifted so the step count decides); ``train_steps_`` is set;
- optional ``fresh_model()``: a newly initialised module (else non-generic submodules are reset in a copy).

The decision (paper, Sec. adaptive transfer): the distance score of a new entity is the base model's anomaly score
on the entity's short data with the top 5% removed (llmad averages it instead of summing so data length does not
matter) divided by the same score on the base model's own training windows. At or below ``threshold``: full
fine-tuning (every tensor the detector trains starts from the base). Above: partial transfer, where only the generic
layers are loaded from the base, the rest starts fresh, and training runs with the generic layers frozen for the
first half of the steps, then with everything.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from llmad.errors import LlmadError

MODES = ("auto", "full", "partial")


def trainable_names(model) -> set[str]:
    """Names of the parameters that currently train."""
    return {n for n, p in model.named_parameters() if p.requires_grad}


def is_generic(det: Any, name: str) -> bool:
    """Whether parameter ``name`` belongs to the detector's generic layers."""
    return any(name.startswith(p) for p in getattr(det, "generic_prefixes", ()))


def check_protocol(det: Any) -> None:
    """One clear error when a detector cannot take part in a transfer."""
    if not getattr(det, "generic_prefixes", None):
        raise LlmadError(f"{getattr(det, 'name', type(det).__name__)} does not support transfer (no generic_prefixes;"
                         f" use lstm-ae, moment or duallmad)")


def set_steps(det: Any, steps: int, seed: int | None = None) -> None:
    """Make ``steps`` optimizer steps the only training cap of ``det``."""
    det.max_steps = int(steps)
    if isinstance(getattr(det, "steps", None), int):  # duallmad names its stage-1 cap ``steps``
        det.steps = int(steps)
    if hasattr(det, "epochs"):
        det.epochs = 10 ** 6
    if seed is not None and hasattr(det, "seed"):
        det.seed = int(seed)


def steps_taken(det: Any) -> int:
    """Optimizer steps of the last ``fit``."""
    n = getattr(det, "train_steps_", None)
    return int(n) if n is not None else len(getattr(det, "losses_", []))


def distance_score(det: Any, windows: Any, trim: float = 0.05) -> float:
    """Mean step score of ``det`` on ``windows`` after removing the top ``trim`` share (robust to the anomalies
    short data may hold)."""
    s = np.sort(np.asarray(det.score_steps(windows), dtype=float).ravel())
    if len(s) == 0:
        raise LlmadError("distance score: no windows to score")
    keep = max(1, int(np.ceil(len(s) * (1 - trim))))
    return float(s[:keep].mean())


def choose_mode(score: float, reference: float, threshold: float, rule: str = "auto") -> str:
    """``full`` when ``score / reference <= threshold`` (or when ``rule`` forces a mode), else ``partial``."""
    if rule not in MODES:
        raise LlmadError(f"transfer mode {rule!r}: expected one of {', '.join(MODES)}")
    if rule != "auto":
        return rule
    return "full" if score <= threshold * max(reference, 1e-12) else "partial"


def fresh_model(base: Any):
    """A newly initialised module shaped like ``base.model_`` (its own ``fresh_model`` when it has one, else a copy
    whose non-generic submodules are reset)."""
    if hasattr(base, "fresh_model"):
        return base.fresh_model()
    m = copy.deepcopy(base.model_)
    for name, mod in m.named_modules():
        own = [f"{name}.{n}" if name else n for n, _ in mod.named_parameters(recurse=False)]
        if own and hasattr(mod, "reset_parameters") and not any(is_generic(base, n) for n in own):
            mod.reset_parameters()
    return m


def _set_trainable(model, names: set[str]) -> None:
    for n, p in model.named_parameters():
        p.requires_grad = n in names


def adapt(base: Any, train: Any, mode: str, steps: int, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A new entity's detector from the cluster ``base``: ``full`` fine-tunes a copy of the base for ``steps``;
    ``partial`` loads only the generic layers into a fresh model and trains the rest (generic frozen) for half of
    ``steps``, then everything for the other half. Returns (detector, {steps, seconds, phases})."""
    check_protocol(base)
    if mode not in ("full", "partial"):
        raise LlmadError(f"adapt: mode must be full or partial, got {mode!r}")
    trainable = trainable_names(base.model_)
    det = copy.deepcopy(base)
    det.threshold_ = None
    det.warm_start = True  # fit() keeps the model_ set here (a plain fit starts over)
    t0 = time.perf_counter()
    phases = []
    if mode == "full":
        phases.append(("all", trainable, steps))
    else:
        model = fresh_model(base)
        generic = {k: v for k, v in base.model_.state_dict().items() if is_generic(base, k)}
        if not generic:
            raise LlmadError(f"{base.name}: no parameter matches generic_prefixes {base.generic_prefixes}")
        model.load_state_dict(generic, strict=False)
        det.model_ = model
        rest = {n for n in trainable if not is_generic(base, n)}
        first = steps // 2 if rest else 0
        phases += [("non-generic (generic frozen)", rest, first), ("all", trainable, steps - first)]
    done, log = 0, []
    for label, names, n in phases:
        if n <= 0:
            continue
        _set_trainable(det.model_, names)
        set_steps(det, n, seed)
        det.fit(train, None)
        k = steps_taken(det)
        done += k
        log.append({"phase": label, "steps": k, "trainable_tensors": len(names)})
    _set_trainable(det.model_, trainable)
    det.warm_start = False  # the adapted detector behaves like any other from here on
    return det, {"mode": mode, "steps": done, "seconds": time.perf_counter() - t0, "phases": log}
