"""The encoder classifier of an SFT detector: load it (base model or a previous llmad model), freeze parts of it,
wrap it in LoRA (peft) with its head trained in full, and read/write the saved ``model/`` + ``adapter/`` folders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from llmad.detectors.sft.config import SFTConfig, parse_freeze
from llmad.errors import LlmadError

LABEL_NAMES = ["normal", "anomalous"]


def is_sft_dir(path: str | Path) -> bool:
    """True for a folder written by ``SFTDetector.save`` (``detector.json`` + ``model/``)."""
    return (Path(path) / "detector.json").is_file() and (Path(path) / "model").is_dir()


def base_location(cfg: SFTConfig) -> str:
    """Where training starts from: ``init_from`` (a saved llmad model or an HF folder) or the resolved ``model``."""
    from llmad.models.resolve import resolve_model

    if cfg.init_from:
        src = Path(cfg.init_from)
        if is_sft_dir(src):
            return str(src / "model")
        if (src / "config.json").is_file():
            return str(src)
        raise LlmadError(f"--init-from {src}: not a saved llmad SFT model (no detector.json + model/)")
    return resolve_model(cfg.model).location


def load_base(cfg: SFTConfig) -> tuple[Any, Any, str]:
    """(2-label classification model, tokenizer, where from) to train, with a pad token and label names set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    location = base_location(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(location, trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            location, num_labels=2, trust_remote_code=cfg.trust_remote_code, use_safetensors=True)
    except OSError as e:
        raise LlmadError(f"model {cfg.init_from or cfg.model!r} ({location}): cannot load safetensors weights "
                         f"and tokenizer ({str(e).splitlines()[0][:200]})") from None
    except ValueError as e:
        msg = str(e).splitlines()[0][:200]
        hint = " (pass --trust-remote-code if you trust its code)" if "trust_remote_code" in str(e) else ""
        raise LlmadError(f"model {cfg.init_from or cfg.model!r}: {msg}{hint}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.config.id2label = dict(enumerate(LABEL_NAMES))
    model.config.label2id = {n: i for i, n in enumerate(LABEL_NAMES)}
    return model, tok, location


def find_layers(model: Any) -> Any:
    """The transformer block list of an encoder (BERT: encoder.layer, DistilBERT: transformer.layer, ...)."""
    import torch.nn as nn

    n = getattr(model.config, "num_hidden_layers", None)
    base = getattr(model, model.base_model_prefix, model)
    for _, mod in base.named_modules():
        if isinstance(mod, nn.ModuleList) and (n is None or len(mod) == n):
            return mod
    raise LlmadError(f"cannot find the transformer layers of {type(model).__name__} to freeze")


def parameter_counts(model: Any) -> dict[str, int]:
    """Trainable and total parameter counts."""
    return {"trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            "total_params": int(sum(p.numel() for p in model.parameters()))}


def apply_freeze(model: Any, spec: str) -> dict[str, int]:
    """Freeze parts of the encoder per ``spec``; returns trainable/total parameter counts."""
    kind, n = parse_freeze(spec)
    base = getattr(model, model.base_model_prefix, model)
    frozen = []
    if kind in ("embeddings", "layers", "encoder"):
        emb = getattr(base, "embeddings", None)
        if emb is None:
            raise LlmadError(f"{type(model).__name__} has no embeddings module to freeze")
        frozen.append(emb)
    if kind in ("layers", "encoder"):
        layers = find_layers(model)
        if kind == "layers" and n > len(layers):
            raise LlmadError(f"--freeze {spec}: the model has only {len(layers)} layers")
        frozen.extend(list(layers)[: (len(layers) if kind == "encoder" else n)])
    for mod in frozen:
        for p in mod.parameters():
            p.requires_grad = False
    return parameter_counts(model)


def head_modules(model: Any) -> list[str]:
    """Names of the task head (and pooler) modules that LoRA must train and save in full (``modules_to_save``)."""
    names = set()
    for name, _ in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in ("classifier", "score", "pre_classifier", "pooler") and name.count(".") <= 1:
            names.add(last)
    return sorted(names)


def wrap_lora(model: Any, cfg: SFTConfig) -> Any:
    """``model`` as a peft LoRA model of rank ``cfg.lora`` (its head trained and saved in full)."""
    from peft import LoraConfig, TaskType, get_peft_model

    kw = dict(task_type=TaskType.SEQ_CLS, r=cfg.lora, lora_alpha=cfg.lora_alpha or 2 * cfg.lora,
              lora_dropout=cfg.lora_dropout, modules_to_save=head_modules(model))
    try:
        return get_peft_model(model, LoraConfig(**kw))
    except ValueError:  # architecture without peft's default target modules
        return get_peft_model(model, LoraConfig(target_modules="all-linear", **kw))


def prepare_model(cfg: SFTConfig) -> tuple[Any, Any, str, dict[str, int]]:
    """(model ready to train, tokenizer, where from, parameter counts): loaded, frozen per ``cfg.freeze`` or
    LoRA-wrapped (LoRA freezes the base itself, so ``freeze`` does not apply then)."""
    model, tok, location = load_base(cfg)
    counts = apply_freeze(model, cfg.freeze if not cfg.lora else "none")
    if cfg.lora:
        model = wrap_lora(model, cfg)
        counts = parameter_counts(model)
    return model, tok, location, counts


def unwrap_trained(model: Any, lora: bool) -> tuple[Any, tuple[dict[str, Any], Any] | None]:
    """(plain eval-mode model to score with, LoRA adapter to save or None) from what ``Trainer`` trained."""
    if hasattr(model, "module") and not hasattr(model, "config"):
        model = model.module
    adapter = None
    if lora:
        from peft import get_peft_model_state_dict

        # Keep the adapter (LoRA weights + full head in modules_to_save) for save(); score with merged weights.
        adapter = ({k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()},
                   model.peft_config["default"])
        model = model.merge_and_unload()
    model.eval()
    return model, adapter


def save_model_dir(folder: Path, model: Any, tokenizer: Any, adapter: tuple[dict[str, Any], Any] | None) -> None:
    """``folder/model`` (safetensors + tokenizer) and, with LoRA, ``folder/adapter`` (peft config + weights)."""
    from safetensors.torch import save_file

    model.save_pretrained(folder / "model", safe_serialization=True)
    tokenizer.save_pretrained(folder / "model")
    if adapter is not None:
        state, peft_cfg = adapter
        (folder / "adapter").mkdir()
        peft_cfg.save_pretrained(str(folder / "adapter"))
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "adapter" / "adapter_model.safetensors"))


def load_model_dir(folder: Path, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(eval-mode model, tokenizer) from a folder written by ``save_model_dir``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder / "model", trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(folder / "model", use_safetensors=True,
                                                               trust_remote_code=trust_remote_code).eval()
    return model, tok


__all__ = ["is_sft_dir", "load_base", "prepare_model", "apply_freeze", "find_layers", "head_modules", "wrap_lora",
           "unwrap_trained", "save_model_dir", "load_model_dir", "parameter_counts", "LABEL_NAMES"]
