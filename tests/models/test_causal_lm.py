"""SmolLM2 GGUF -> safetensors conversion, 4-bit NF4 loading on CPU, chat templates, device/dtype choice."""
from __future__ import annotations

import json

import pytest


@pytest.mark.integration
def test_convert_smollm2_is_a_plain_cached_checkpoint():
    from safetensors import safe_open

    from llmad.models.packages import cache_dir
    from llmad.models.resolve import resolve_model
    from llmad.models.smollm2 import convert_smollm2

    folder = convert_smollm2()
    assert folder.parent == cache_dir()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        emb = f.get_tensor("model.embed_tokens.weight")
    assert len([k for k in keys if k.endswith("q_proj.weight")]) == cfg["num_hidden_layers"]
    assert tuple(emb.shape) == (cfg["vocab_size"], cfg["hidden_size"])
    assert (folder / "tokenizer.json").is_file()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert convert_smollm2() == folder  # cached: no second conversion
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    assert resolve_model("smollm2-135m").location == str(folder)


@pytest.mark.integration
@pytest.mark.parametrize("four_bit", [False, True])
def test_load_smollm2_answers_and_uses_chat_template(four_bit):
    """The converted weights are right (a factual answer) in float32 and in NF4 4-bit on CPU."""
    import torch

    from llmad.models.causal_lm import is_4bit, load_causal_lm

    lm = load_causal_lm("smollm2-135m", load_in_4bit=four_bit)
    assert lm.has_chat_template and lm.context_window == 8192
    assert is_4bit(lm.model) == four_bit
    assert lm.device == "cpu" and lm.dtype == torch.float32
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                            tokenize=False, add_generation_prompt=True)
    ids = lm.tokenizer(text + "The capital of France is", add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():  # one forward pass: bitsandbytes' CPU 4-bit path is slow without its kernels package
        logits = lm.model(**ids).logits[0, -1]
    assert lm.tokenizer.decode(int(logits.argmax())).strip() == "Paris"


def test_bnb_config_is_nf4_with_compute_dtype():
    import torch

    from llmad.models.causal_lm import bnb_4bit_config

    c = bnb_4bit_config(torch.bfloat16)
    assert c.load_in_4bit and c.bnb_4bit_quant_type == "nf4" and c.bnb_4bit_compute_dtype == torch.bfloat16


def test_load_places_4bit_on_the_picked_device(monkeypatch, tmp_path):
    """On a GPU machine the NF4 weights go to CUDA (bitsandbytes' CUDA kernels); here we check the call."""
    import torch

    import llmad.models.causal_lm as m

    seen = {}

    class FakeModel:
        generation_config = type("G", (), {"pad_token_id": None})()

        def eval(self):
            return self

        def to(self, device):
            seen["to"] = device
            return self

    class FakeTok:
        pad_token_id = None
        eos_token = "</s>"
        chat_template = None

    def fake_model(location, **kw):
        seen.update(kw)
        return FakeModel()

    monkeypatch.setattr(m, "pick_device_dtype", lambda: ("cuda", torch.bfloat16, {"bf16": True, "fp16": False}))
    monkeypatch.setattr(m, "resolve_model", lambda name: type("R", (), {"location": str(tmp_path)})())
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", fake_model)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: FakeTok())
    lm = m.load_causal_lm("x", load_in_4bit=True)
    assert seen["device_map"] == {"": 0} and seen["dtype"] == torch.bfloat16
    assert seen["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert seen["trust_remote_code"] is False and "to" not in seen
    assert lm.tokenizer.pad_token == "</s>"  # no pad token: falls back to EOS
    lm = m.load_causal_lm("x", load_in_4bit=False)
    assert seen["to"] == "cuda" and seen["dtype"] == torch.bfloat16
