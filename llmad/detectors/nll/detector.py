"""Label-free anomaly detection by language-model likelihood: ``NLLDetector`` (job rows, kind ``nll``) and
``WindowNLLDetector`` (metric windows, kind ``window-nll``).

Follows AnoLLM (Tsai et al., "AnoLLM: Large Language Models for Tabular Anomaly Detection", ICLR 2025): a small
causal LM is fine-tuned on the train rows serialized as text, with the column order shuffled per training sample,
and a row's anomaly score is its negative log-likelihood under the model, averaged over random column orders.
Labels are never used for training (``normal_only`` is the separate semi-supervised mode: train rows labelled
normal only). Where llmad differs:
- Only the *value* tokens are scored (AnoLLM scores the values as well; a field name is context). The score is the
  mean over the serialized fields of each value's NLL (summed over its tokens), averaged over ``permutations``
  orders: AnoLLM's sum divided by the number of fields, so that a partial job (streaming: fields not revealed yet
  are left out) is on the same scale as a finished one.
- The ``permutations`` scoring orders are drawn once from ``seed`` and shared by every row, so a row's score depends
  only on its values (reproducible, cacheable); training draws a fresh order per row and pass.
- Numbers carry 3 significant digits (``serialize``: why); the peer facts of ``llmad.data.context`` (job vs the same
  transformation in its run, the host's other jobs; label-free) are fields by default (``fields=context``).
- Per-field NLL is kept (``score_details``: ``nll_<field>`` and ``top_field``, the field whose NLL exceeds its
  train mean the most), so a user sees which value looks anomalous.
- ``keep_layers`` keeps the first N decoder layers of the pretrained model (speed on CPUs).
- Thresholds without labels: ``contamination:Q`` (the top Q share of held-out validation scores, labels unused),
  ``train-quantile:Q`` (a quantile of train scores); ``validation`` (labels) as every other detector.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from llmad.detectors.base import Detector, read_detector_json, write_detector_json
from llmad.detectors.nll import lm as lmod
from llmad.detectors.nll.config import NLLConfig, parse_threshold
from llmad.detectors.nll.serialize import Serializer, job_records, window_fields, window_records
from llmad.detectors.windows import WindowDetector, as_windows
from llmad.errors import LlmadError

FORMAT_VERSION = 1


# What an operator checks for a slow job: the task, its runtime and CPU time, and how they and its host compare with
# peers (label-free). Fewer tokens than ``context`` (2.4x faster) and no worse on 1000genome validation rows
# (bench/results/unsupervised_pilot.md).
OPS_FIELDS = ("transformation", "runtime", "kickstart_executables_cpu_time", "ctx_runtime_rel", "ctx_cpu_rel",
              "ctx_cpu_util", "ctx_host_slowness", "ctx_host_cpu_slowness")


def job_fields(spec: str, own: Sequence[str] | None = None) -> list[str]:
    """The job columns of a field set: ``ops``, ``paper``, ``context`` or a comma list of columns and set names.

    ``own``: the feature columns of a user's own job table (``jobs:`` specs): they stand in for the nine Flow-Bench
    features in every set, beside the label-free peer facts."""
    from llmad.data.context import CONTEXT_FEATURES
    from llmad.data.flowbench import PAPER_FEATURES

    base = list(own) if own else list(PAPER_FEATURES)
    ops = list(OPS_FIELDS) if not own else ["transformation", *base, *(f for f in OPS_FIELDS if f.startswith("ctx_"))]
    sets = {"paper": base, "context": ["transformation"] + base + list(CONTEXT_FEATURES), "ops": ops}
    cols: list[str] = []
    for part in (c.strip() for c in str(spec).split(",")):
        for c in sets.get(part, [part] if part else []):
            if c not in cols:
                cols.append(c)
    if not cols:
        raise LlmadError(f"--fields {spec!r}: expected ops, paper, context or a comma list of columns")
    return cols


class NLLCore:
    """The shared part: model, serialization, fine-tuning, per-field NLL, thresholds and save/load. The data-specific
    subclasses provide ``records(items, partial)`` and ``fields_``."""

    config: NLLConfig
    default_template = "job"

    def _init_state(self) -> None:
        self.threshold_ = None
        self.lm_ = None
        self.fields_: list[str] = []
        self.orders_: list[list[str]] = []
        self.baseline_: dict[str, float] = {}
        self.scale_: dict[str, float] = {}
        self.vocab_ = np.zeros(0, dtype=np.int64)
        self.validation_scores_: np.ndarray | None = None
        self.threshold_rule_: str = ""
        self.train_info_: dict[str, Any] = {}
        self._template_path: str | None = None
        self._ser: Serializer | None = None

    # ------------------------------------------------------------ model and text
    def load_model(self, lm: Any = None) -> Any:
        """Load (or take) the causal LM; ``keep_layers`` drops the decoder layers after the first N."""
        if lm is not None:
            self.lm_ = lm
        if self.lm_ is None:
            from llmad.models.causal_lm import load_causal_lm

            self.lm_ = load_causal_lm(self.config.model, load_in_4bit=self.config.load_in_4bit,
                                      trust_remote_code=self.config.trust_remote_code)
        if self.config.keep_layers:
            before = lmod.keep_first_layers(lmod.hf_model(self.lm_.model), self.config.keep_layers)
            self.train_info_.setdefault("layers", {"kept": min(before, self.config.keep_layers), "of": before})
        return self.lm_

    def serializer(self) -> Serializer:
        """The template-backed serializer (built once)."""
        if self._ser is None:
            c = self.config
            self._ser = Serializer(self._template_path or c.template, c.sig_digits, c.missing, c.max_value_chars)
        return self._ser

    def _device(self) -> str:
        return "cuda" if next(self.lm_.model.parameters()).device.type == "cuda" else "cpu"

    def training_texts(self, records: list[dict[str, Any]]) -> tuple[list[str], list[list[tuple[str, int, int]]]]:
        """Serialized train rows: ``epochs`` passes, a fresh field order per row and pass (the last pass partial)."""
        rng = np.random.default_rng(self.config.seed + 1)
        ser = self.serializer()
        texts, spans = [], []
        passes = max(1, math.ceil(self.config.epochs))
        for p in range(passes):
            take = len(records) if p < passes - 1 or self.config.epochs == passes else \
                int(round((self.config.epochs - p) * len(records)))
            for i in rng.permutation(len(records))[:take]:
                order = [self.fields_[j] for j in rng.permutation(len(self.fields_))]
                t, sp = ser.render(ser.values(records[i], order))
                texts.append(t)
                spans.append(sp)
        ser.warn(" in the train rows")
        return texts, spans

    def fit_lm(self, records: list[dict[str, Any]], output_dir: str | Path | None = None) -> None:
        """Fine-tune the LM on serialized ``records`` (labels never reach this function)."""
        c = self.config
        device = self._device()
        precision = lmod.resolve_precision(c.precision, device)
        rng = np.random.default_rng(c.seed)
        self.orders_ = [[self.fields_[j] for j in rng.permutation(len(self.fields_))] for _ in range(c.permutations)]
        texts, spans = self.training_texts(records)
        ids, flds, cut = lmod.encode(self.lm_.tokenizer, texts, spans, c.max_length)
        if cut:
            lmod.warn(f"warning [long-row]: {cut} train text(s) longer than {c.max_length} tokens were cut")
        self.vocab_ = lmod.value_vocab(ids, flds)
        info = lmod.finetune(self.lm_, ids, flds, self.vocab_, c, device, precision,
                             output_dir=str(output_dir) if output_dir else None)
        info["tokens_per_row"] = float(np.mean([len(i) for i in ids]))
        info["rows"] = len(records)
        self.train_info_.update(info)

    # ------------------------------------------------------------ scoring
    def nll_frame(self, records: list[dict[str, Any]], partial: bool = False) -> pd.DataFrame:
        """Per row: ``score`` (mean field NLL, averaged over the orders), ``nll_<field>`` (averaged over the orders;
        NaN when the field is absent), ``top_field`` and ``fields_scored``."""
        if self.lm_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")
        c = self.config
        ser = self.serializer()
        n, k = len(records), len(self.fields_)
        texts, spans, owner = [], [], []
        for order in self.orders_:
            for i, rec in enumerate(records):
                t, sp = ser.render(ser.values(rec, order, partial))
                texts.append(t)
                spans.append(sp)
                owner.append(i)
        ser.warn()
        col = {f: j for j, f in enumerate(self.fields_)}
        ids, flds, cut = lmod.encode(self.lm_.tokenizer, texts, spans, c.max_length)
        if cut:
            lmod.warn(f"warning [long-row]: {cut} text(s) longer than {c.max_length} tokens were cut (their last "
                      f"fields are not scored)")
        per = lmod.value_nll(self.lm_, ids, flds, [len(s) for s in spans], self.vocab_, c.eval_batch_size,
                             lmod.resolve_precision(c.precision, self._device()))
        total = np.zeros((n, k))
        count = np.zeros((n, k))
        row_score = np.zeros(n)
        row_orders = np.zeros(n)
        for i, sp, v in zip(owner, spans, per):
            ok = np.isfinite(v)
            if not ok.any():
                continue
            for (name, _, _), x in zip(sp, v):
                if np.isfinite(x) and name in col:
                    total[i, col[name]] += x
                    count[i, col[name]] += 1
            row_score[i] += float(np.mean(v[ok]))
            row_orders[i] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            field_nll = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        # A row with nothing to score (no field known yet) gets 0: no evidence, never NaN.
        score = np.where(row_orders > 0, row_score / np.maximum(row_orders, 1), 0.0)
        if c.aggregate == "z" and self.scale_:
            score = self.z_score(field_nll)
        out = pd.DataFrame({"score": score})
        for j, f in enumerate(self.fields_):
            out[f"nll_{f}"] = field_nll[:, j]
        base = np.array([self.baseline_.get(f, 0.0) for f in self.fields_])
        excess = np.where(np.isfinite(field_nll), field_nll - base, -np.inf)
        top = excess.argmax(axis=1) if k else np.zeros(n, dtype=int)
        has = np.isfinite(field_nll).any(axis=1) if k else np.zeros(n, dtype=bool)
        out["top_field"] = [self.fields_[t] if h else "" for t, h in zip(top, has)]
        out["fields_scored"] = np.isfinite(field_nll).sum(axis=1)
        return out

    def z_score(self, field_nll: np.ndarray) -> np.ndarray:
        """``aggregate=z``: the mean over the scored fields of (field NLL - its train mean) / its train std."""
        mu = np.array([self.baseline_.get(f, 0.0) for f in self.fields_])
        sd = np.array([self.scale_.get(f, 1.0) for f in self.fields_])
        z = (field_nll - mu) / sd
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row with no scored field: nanmean of nothing
            zs = np.nanmean(z, axis=1)
        return np.where(np.isfinite(zs), zs, 0.0)

    # ------------------------------------------------------------ thresholds
    def fit_threshold(self, train_records: list[dict[str, Any]], val_records: list[dict[str, Any]] | None,
                      val_labels: np.ndarray | None) -> None:
        """Per-field baselines from a train sample, then ``threshold_`` by the configured rule."""
        c = self.config
        name, q = parse_threshold(c.threshold)
        rng = np.random.default_rng(c.seed + 2)
        idx = np.sort(rng.choice(len(train_records), min(c.threshold_rows, len(train_records)), replace=False)) \
            if train_records else np.zeros(0, dtype=int)
        tr = self.nll_frame([train_records[i] for i in idx]) if len(idx) else None
        if tr is not None:
            self.baseline_ = {f: float(np.nanmean(tr[f"nll_{f}"])) for f in self.fields_
                              if tr[f"nll_{f}"].notna().any()}
            self.scale_ = {f: max(float(np.nanstd(tr[f"nll_{f}"])), 1e-3) for f in self.baseline_}
            if c.aggregate == "z":
                tr["score"] = self.z_score(tr[[f"nll_{f}" for f in self.fields_]].to_numpy(dtype=float))
        if name == "number":
            self.threshold_, self.threshold_rule_ = float(q), f"{q:g} (given)"
        elif name == "train-quantile":
            if tr is None:
                raise LlmadError("--threshold train-quantile: no train rows to score")
            self.threshold_ = float(np.quantile(tr["score"], q))
            self.threshold_rule_ = f"train-quantile:{q:g} (the {q:.0%} quantile of {len(tr)} train scores)"
        elif name == "contamination":
            if val_records:
                s, where = self.nll_frame(val_records)["score"].to_numpy(), f"{len(val_records)} validation rows"
                self.validation_scores_ = s
            elif tr is not None:
                s, where = tr["score"].to_numpy(), f"{len(tr)} train rows (no validation part)"
            else:
                raise LlmadError("--threshold contamination: no rows to score")
            self.threshold_ = float(np.quantile(s, 1.0 - q))
            self.threshold_rule_ = f"contamination:{q:g} (top {q:.0%} of {where}' scores, labels unused)"
        else:
            self._validation_threshold(val_records, val_labels)

    def _validation_threshold(self, val_records, val_labels) -> None:
        if not val_records or val_labels is None:
            raise LlmadError("--threshold validation needs a labelled validation part; use contamination:Q or "
                             "train-quantile:Q without labels")
        s = self.nll_frame(val_records)["score"].to_numpy()
        self.validation_scores_ = s
        self.set_threshold(s, np.asarray(val_labels).astype(int))
        self.threshold_rule_ = f"validation (best F1 on {len(val_records)} labelled validation rows)"

    # ------------------------------------------------------------ save / load
    def _save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """``model/`` (merged weights + tokenizer) or ``adapter/`` (4-bit base), then detector.json last."""
        import shutil

        from llmad.io import atomic_dir

        if self.lm_ is None:
            raise RuntimeError(f"{type(self).__name__}.save: fit() or load() first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "detector.json").unlink(missing_ok=True)  # the folder is incomplete until the end
        model = self.lm_.model
        sub = "adapter" if hasattr(model, "peft_config") else "model"
        with atomic_dir(path / sub) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            if sub == "model":
                self.lm_.tokenizer.save_pretrained(str(tmp))
        stale = path / ("model" if sub == "adapter" else "adapter")
        if stale.is_dir():
            shutil.rmtree(stale)
        template = self.config.template
        ref = Path(self._template_path or template)
        if ref.suffix in (".j2", ".jinja", ".txt") and ref.is_file():
            shutil.copy(ref, path / "template.j2")  # a user template travels with the model
            template = "template.j2"
        write_detector_json(path, self.kind, {
            "format": FORMAT_VERSION, "config": asdict(self.config), "template": template, "weights": sub,
            "threshold": self.threshold_, "threshold_rule": self.threshold_rule_, "fields": self.fields_,
            "orders": self.orders_, "baseline": self.baseline_, "scale": self.scale_,
            "value_vocab": [int(v) for v in self.vocab_],
            "train_info": {k: v for k, v in self.train_info_.items() if k != "losses"}, **(extra or {})})

    @classmethod
    def _load(cls, path: str | Path, lm: Any = None):
        from llmad.config import from_dict
        from llmad.models.causal_lm import load_causal_lm

        p = Path(path)
        meta = read_detector_json(p)
        if meta.get("kind") != cls.kind:
            raise LlmadError(f"{p}: detector.json is of kind {meta.get('kind')!r}, not {cls.kind}")
        cfg = from_dict(NLLConfig, meta["config"], where=str(p / "detector.json"))
        det = cls(config=cfg)
        if meta.get("template") == "template.j2":
            det._template_path = str(p / "template.j2")
        if lm is not None:
            det.lm_ = lm
        elif meta.get("weights") == "adapter":
            from peft import PeftModel

            det.load_model()
            det.lm_.model = PeftModel.from_pretrained(det.lm_.model, str(p / "adapter")).eval()
        else:  # merged weights: the saved config already has the kept layers only
            det.lm_ = load_causal_lm(str(p / "model"), trust_remote_code=cfg.trust_remote_code)
        det.threshold_ = meta["threshold"]
        det.threshold_rule_ = meta.get("threshold_rule", "")
        det.fields_ = list(meta["fields"])
        det.orders_ = [list(o) for o in meta["orders"]]
        det.baseline_ = dict(meta.get("baseline") or {})
        det.scale_ = dict(meta.get("scale") or {})
        det.vocab_ = np.asarray(meta["value_vocab"], dtype=np.int64)
        det.train_info_ = dict(meta.get("train_info") or {})
        return det, meta


@dataclass
class NLLDetector(NLLCore, Detector):
    """Job rows: AnoLLM-style likelihood scores (see the module docstring)."""

    config: NLLConfig = field(default_factory=NLLConfig)
    kind = "nll"  # registry kind (a class attribute, not a dataclass field)
    data_kind = "jobs"

    def __post_init__(self) -> None:
        self._init_state()
        self.name = "nll-normal-only" if self.config.normal_only else "nll"

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments."""
        return {"config": self.config}

    def input_columns(self) -> list[str]:
        """The job columns a score depends on (the replay reveals exactly these)."""
        return self.fields_ or job_fields(self.config.fields)

    def records(self, jobs: pd.DataFrame) -> list[dict[str, Any]]:
        """Field records of job rows (peer facts computed when a field needs them and the table lacks them)."""
        cols = self.input_columns()
        need = [c for c in cols if c.startswith("ctx_")]
        if need and not all(c in jobs.columns for c in need) and \
                {"run_id", "transformation", "host", "job_id", "runtime"} <= set(jobs.columns):
            from llmad.data.context import add_context_features

            jobs = add_context_features(jobs, causal=self.config.causal)
        return job_records(jobs, cols)

    def fit(self, train: pd.DataFrame, validation: pd.DataFrame | None = None, lm: Any = None,
            output_dir: str | Path | None = None) -> "NLLDetector":
        """Fine-tune on train rows (labels unused; ``normal_only``: rows labelled normal), then the threshold."""
        from llmad.data.splits import subsample

        c = self.config.validate()
        self._init_state()
        own = train.attrs.get("features")
        self.fields_ = job_fields(c.fields, own)
        if own:  # an own table has no Flow-Bench columns: peer facts it cannot compute would only say "missing"
            self.fields_ = [f for f in self.fields_ if f in train and train[f].notna().any()]
        rows = train
        if c.normal_only:
            if "label" not in train:
                raise LlmadError("--normal-only needs a 'label' column in the train part")
            rows = train[train["label"].to_numpy() == 0]
        rows = subsample(rows, c.train_limit, c.seed)
        if len(rows) == 0:
            raise LlmadError("no train rows to learn from" + (" (none labelled normal)" if c.normal_only else ""))
        self.load_model(lm)
        recs = self.records(rows)
        self.fit_lm(recs, output_dir)
        self.train_info_["supervision"] = "normal-only" if c.normal_only else "none"
        has_val = validation is not None and len(validation) > 0
        self.fit_threshold(recs, self.records(validation) if has_val else None,
                           validation["label"].to_numpy() if has_val and "label" in validation else None)
        return self

    def score_details(self, items: pd.DataFrame, partial: bool = False) -> pd.DataFrame:
        """Per job: score, ``nll_<field>``, ``top_field``, ``fields_scored``."""
        return self.nll_frame(self.records(items), partial=partial)

    def score(self, items: pd.DataFrame) -> np.ndarray:
        """Mean value NLL over the fields and field orders (higher = more anomalous)."""
        return self.score_details(items)["score"].to_numpy()

    def score_partial(self, items: pd.DataFrame) -> np.ndarray:
        """Scores of partly revealed jobs (streaming): fields not known yet are left out, not written as missing."""
        return self.score_details(items, partial=True)["score"].to_numpy()

    def save(self, path: str | Path) -> None:
        """Weights, tokenizer, config, fields, orders, baselines and threshold (detector.json last)."""
        self._save(path)

    @classmethod
    def load(cls, path: str | Path, lm: Any = None) -> "NLLDetector":
        """A detector written by ``save``; ``lm`` replaces the saved weights (tests)."""
        return cls._load(path, lm)[0]


class WindowNLLDetector(NLLCore, WindowDetector):
    """Metric windows: per-feature window statistics (z-scores) serialized with ``prompts/nll/window.j2``."""

    kind = "window-nll"
    name = "nll"

    def __init__(self, config: NLLConfig | None = None, features: Sequence[str] | None = None):
        self.config = config or NLLConfig(template="window")
        self.features = list(features) if features is not None else None
        self._init_state()

    def records(self, items: Any) -> list[dict[str, Any]]:
        """Field records of windows: ``<feature> <stat>`` z-scores."""
        feats = self.features or (items.features if hasattr(items, "features") else None)
        x = as_windows(items)
        if feats is None:
            feats = [f"f{i}" for i in range(x.shape[2])]
        return window_records(x, feats, self.config.window_stats)

    def _fit(self, train: Any) -> None:
        c = self.config.validate()
        if self.features is None:
            self.features = list(getattr(train, "features", None)
                                 or [f"f{i}" for i in range(as_windows(train).shape[2])])
        self.fields_ = window_fields(self.features, c.window_stats)
        self.load_model()
        recs = self.records(train)
        if c.train_limit and len(recs) > c.train_limit:
            rng = np.random.default_rng(c.seed)
            recs = [recs[i] for i in np.sort(rng.choice(len(recs), c.train_limit, replace=False))]
        self.fit_lm(recs)
        self.train_info_["supervision"] = "none"
        # Baselines, and a label-free fallback threshold; validation points (WindowDetector.calibrate) replace it.
        saved = self.config.threshold
        self.config.threshold = "train-quantile:0.95"
        try:
            self.fit_threshold(recs, None, None)
        finally:
            self.config.threshold = saved

    def fit(self, train: Any, validation: Any | None = None, lm: Any = None) -> "WindowNLLDetector":
        """Fine-tune on train windows; threshold on validation points (``WindowDetector.fit``)."""
        if lm is not None:
            self.lm_ = lm
        return WindowDetector.fit(self, train, validation)

    def score_steps(self, items: Any) -> np.ndarray:
        """The window score broadcast over its steps."""
        x = as_windows(items)
        s = self.nll_frame(self.records(x))["score"].to_numpy()
        return np.repeat(s[:, None], x.shape[1], axis=1)

    def save(self, path: str | Path) -> None:
        """Weights, tokenizer, config, features, orders and threshold (detector.json last)."""
        self._save(path, {"features": self.features})

    @classmethod
    def load(cls, path: str | Path, lm: Any = None) -> "WindowNLLDetector":
        """A detector written by ``save``."""
        det, meta = cls._load(path, lm)
        det.features = list(meta.get("features") or []) or None
        return det


__all__ = ["NLLDetector", "WindowNLLDetector", "NLLConfig", "job_fields"]
