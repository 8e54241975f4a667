"""The language-model side of the NLL detector: load (optionally keeping the first N decoder layers), fine-tune on
serialized rows with the HF Trainer (LoRA through peft, or full), and score the NLL of value tokens in batches.

Scoring runs the decoder once per batch and applies the output head only at the value tokens (a field name is
context, never scored): on SmolLM2-135M the head is a 49k x 576 matrix, ~20% of a full forward pass per position.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Sequence

import numpy as np

from llmad.errors import LlmadError

LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


def hf_model(model: Any) -> Any:
    """The transformers model under a peft wrapper."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def keep_first_layers(model: Any, n: int) -> int:
    """Drop every decoder layer after the first ``n`` (in place); returns the layer count before."""
    import torch

    for path in LAYER_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            before = len(obj)
            if n < before:
                parent = model
                *head, last = path.split(".")
                for part in head:
                    parent = getattr(parent, part)
                setattr(parent, last, torch.nn.ModuleList(list(obj)[:n]))
                for attr in ("num_hidden_layers", "n_layer"):
                    if hasattr(model.config, attr):
                        setattr(model.config, attr, n)
                types = getattr(model.config, "layer_types", None)
                if isinstance(types, list):
                    model.config.layer_types = types[:n]
            return before
    raise LlmadError(f"--keep-layers: no decoder layer list found in {type(model).__name__}")


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), else fp32."""
    if precision != "auto":
        if precision == "bf16" and device == "cuda":
            import torch

            if not torch.cuda.is_bf16_supported():
                raise LlmadError("--precision bf16: this GPU has no bf16")
        return precision
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from llmad.detectors.sft.fast import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: str, precision: str):
    """torch autocast for bf16 (CPU or CUDA); a no-op context for fp32."""
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def start_id(tok: Any) -> int:
    """The token every sequence starts with (BOS, else EOS), so that the first value token is scored too."""
    for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
        if t is not None:
            return int(t)
    return 0


def encode(tok: Any, texts: Sequence[str], spans: Sequence[Sequence[tuple[str, int, int]]], max_length: int
           ) -> tuple[list[list[int]], list[np.ndarray], int]:
    """Token ids (start token first, cut at ``max_length``) and, per token, the index of the field span whose value
    it overlaps (-1: not a value token); also how many rows were cut. A field cut part-way is dropped."""
    if not getattr(tok, "is_fast", False):
        raise LlmadError("the NLL detector needs a fast (Rust) tokenizer for character offsets")
    enc = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    s0 = start_id(tok)
    ids_out, fld_out, cut = [], [], 0
    for ids, offs, sp in zip(enc["input_ids"], enc["offset_mapping"], spans):
        fld = np.full(len(ids), -1, dtype=np.int64)
        if sp:
            starts = np.array([a for _, a, _ in sp])
            ends = np.array([b for _, _, b in sp])
            o = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
            i = np.searchsorted(starts, o[:, 1], side="left") - 1  # the last span starting before the token ends
            ok = (i >= 0) & (o[:, 1] > o[:, 0])
            ok[ok] &= o[ok, 0] < ends[i[ok]]
            fld[ok] = i[ok]
        ids = [s0] + list(ids)
        fld = np.concatenate([[-1], fld])
        if len(ids) > max_length:
            cut += 1
            partial = set(fld[max_length:][fld[max_length:] >= 0].tolist())
            ids, fld = ids[:max_length], fld[:max_length].copy()
            if partial:
                fld[np.isin(fld, list(partial))] = -1
        ids_out.append(ids)
        fld_out.append(fld)
    return ids_out, fld_out, cut


def value_vocab(ids: list[list[int]], flds: list[np.ndarray]) -> np.ndarray:
    """The sorted token ids that occur at value positions (the vocabulary value tokens are scored against)."""
    seen = [np.asarray(i)[f >= 0] for i, f in zip(ids, flds)]
    return np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)


def parts(model: Any) -> tuple[Any, Any]:
    """(decoder, output head) of a causal LM (under a peft wrapper too; LoRA layers sit inside the decoder)."""
    hf = hf_model(model)
    return getattr(hf, hf.base_model_prefix), hf.get_output_embeddings()


def restricted_nll(head: Any, hs: Any, targets: Any, vocab: Any) -> Any:
    """NLL of ``targets`` under the softmax over ``vocab`` (the values' vocabulary), from hidden states ``hs``.

    Conditioning on "the next token is a value token" costs |vocab| dot products per position instead of the
    model's whole vocabulary (49k for SmolLM2). A target outside ``vocab`` (a value token never seen in train) joins
    its own normaliser, so it is scored (low), never dropped."""
    import torch

    w = head.weight
    b = getattr(head, "bias", None)
    lv = hs @ w[vocab].T
    lt = (hs * w[targets]).sum(-1)
    if b is not None:
        lv, lt = lv + b[vocab], lt + b[targets]
    lv, lt = lv.float(), lt.float()
    inside = torch.isin(targets, vocab)
    z = torch.logsumexp(lv, -1)
    z = torch.where(inside, z, torch.logaddexp(z, lt))
    return z - lt


def value_nll(lm: Any, ids: list[list[int]], flds: list[np.ndarray], n_fields: Sequence[int], vocab: np.ndarray,
              batch_size: int = 64, precision: str = "fp32") -> list[np.ndarray]:
    """Per row, the NLL (nats, summed over its value tokens) of each field span; NaN for a span with no token."""
    import torch

    decoder, head = parts(lm.model)
    dev = next(lm.model.parameters()).device
    device = "cuda" if dev.type == "cuda" else "cpu"
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    voc = torch.as_tensor(np.asarray(vocab, dtype=np.int64), device=dev)
    out = [np.full(k, np.nan) for k in n_fields]
    order = sorted(range(len(ids)), key=lambda r: len(ids[r]))  # similar lengths in a batch: little padding
    with torch.inference_mode(), autocast(device, precision):
        for s in range(0, len(order), max(1, batch_size)):
            rows = order[s:s + batch_size]
            width = max(len(ids[r]) for r in rows)
            x = torch.full((len(rows), width), pad, dtype=torch.long)
            m = torch.zeros((len(rows), width), dtype=torch.long)
            br, bp, bf = [], [], []
            for k, r in enumerate(rows):
                x[k, :len(ids[r])] = torch.tensor(ids[r])
                m[k, :len(ids[r])] = 1
                pos = np.flatnonzero(flds[r] >= 0)
                br.append(np.full(len(pos), k))
                bp.append(pos)
                bf.append(flds[r][pos])
            rr, pp = np.concatenate(br), np.concatenate(bp)
            if len(pp) == 0:
                continue
            x = x.to(dev)
            h = decoder(input_ids=x, attention_mask=m.to(dev)).last_hidden_state
            ri, pi = torch.as_tensor(rr, device=dev), torch.as_tensor(pp, device=dev)
            nll = restricted_nll(head, h[ri, pi - 1], x[ri, pi], voc)  # the state before a token predicts it
            nll = nll.cpu().numpy().astype(np.float64)
            ff = np.concatenate(bf)
            for k, r in enumerate(rows):
                sel = rr == k
                if sel.any():
                    acc = np.zeros(n_fields[r])
                    np.add.at(acc, ff[sel], nll[sel])
                    seen = np.zeros(n_fields[r], dtype=bool)
                    seen[ff[sel]] = True
                    out[r] = np.where(seen, acc, np.nan)
    return out


class _Rows:
    """A torch dataset of (token ids, value-token mask)."""

    def __init__(self, ids: list[list[int]], flds: list[np.ndarray]):
        self.ids, self.flds = ids, flds

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "value": (self.flds[i] >= 0).tolist()}


def collate(pad: int):
    """Right-pad a batch; labels are the value tokens only (-100 elsewhere: names, separators, padding)."""
    import torch

    def fn(batch: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(b["input_ids"]) for b in batch)
        x = torch.full((len(batch), width), pad, dtype=torch.long)
        m = torch.zeros((len(batch), width), dtype=torch.long)
        lab = torch.full((len(batch), width), -100, dtype=torch.long)
        for k, b in enumerate(batch):
            n = len(b["input_ids"])
            x[k, :n] = torch.tensor(b["input_ids"])
            m[k, :n] = 1
            v = torch.tensor(b["value"], dtype=torch.bool)
            lab[k, :n] = torch.where(v, x[k, :n], torch.full_like(x[k, :n], -100))
        return {"input_ids": x, "attention_mask": m, "labels": lab}

    return fn


def value_trainer(vocab: np.ndarray):
    """A ``Trainer`` whose loss is the value tokens' NLL under the values' vocabulary (what scoring measures)."""
    import torch
    from transformers import Trainer

    class ValueTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            decoder, head = parts(model)
            h = decoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
            r, p = (labels != -100).nonzero(as_tuple=True)
            voc = torch.as_tensor(np.asarray(vocab, dtype=np.int64), device=h.device)
            loss = restricted_nll(head, h[r, p - 1], labels[r, p], voc).mean()
            return (loss, None) if return_outputs else loss

    return ValueTrainer


def finetune(lm: Any, ids: list[list[int]], flds: list[np.ndarray], vocab: np.ndarray, cfg: Any, device: str,
             precision: str, output_dir: str | None = None) -> dict[str, Any]:
    """Fine-tune on the value tokens of serialized rows (HF Trainer); LoRA (``cfg.lora_r`` > 0, merged afterwards
    unless the base is 4-bit) or full. Returns what was trained, for metrics."""
    import tempfile

    from transformers import TrainingArguments

    if not ids:
        raise LlmadError("no train rows to fine-tune on")
    model = lm.model
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        if cfg.load_in_4bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=0.0,
                          target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    steps_per_pass = math.ceil(len(ids) / cfg.batch_size)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmad-nll-") as tmp:
        args = TrainingArguments(
            output_dir=output_dir or tmp, per_device_train_batch_size=cfg.batch_size, num_train_epochs=1,
            max_steps=cfg.max_steps or -1, learning_rate=cfg.learning_rate, lr_scheduler_type="linear",
            warmup_steps=min(20, max(1, steps_per_pass // 20)), weight_decay=0.0,
            logging_steps=max(1, steps_per_pass // 10), save_strategy="no", report_to=[], seed=cfg.seed,
            bf16=precision == "bf16", fp16=False, use_cpu=device == "cpu", disable_tqdm=not cfg.progress,
            dataloader_num_workers=0, remove_unused_columns=False)
        trainer = value_trainer(vocab)(model=model, args=args, train_dataset=_Rows(ids, flds),
                                       data_collator=collate(lm.tokenizer.pad_token_id or 0))
        if not cfg.progress:
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # the per-step loss lines
        result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model = trainer.model
    if cfg.lora_r > 0 and not cfg.load_in_4bit:
        model = model.merge_and_unload()  # scoring then runs the plain model (no adapter overhead)
    model.eval()
    lm.model = model
    return {"train_rows": len(ids), "steps": int(trainer.state.global_step), "train_s": time.perf_counter() - t0,
            "train_loss": float(result.training_loss), "losses": losses, "trainable_params": int(trainable),
            "mode": f"lora r={cfg.lora_r}" if cfg.lora_r else "full", "precision": precision, "device": device,
            "value_vocab": int(len(vocab))}


def warn(msg: str) -> None:
    """A named warning line on stderr."""
    print(f"llmad: {msg}", file=sys.stderr)
