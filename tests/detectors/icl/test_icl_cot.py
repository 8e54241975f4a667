"""Chain-of-thought that answers: the answer parser, the stop rule, the loop guard and the forced answer step, on a
tiny Llama (SmolLM2's architecture and tokenizer, built here) whose next token is scripted for given contexts, so
that HF ``generate`` runs with llmad's logits processor and stopping criterion exactly as on a real model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from icl_fixtures import make_jobs, smol_tokenizer, tiny_llama  # noqa: F401 (smol_tokenizer is a fixture)

from llmad.detectors.icl.config import ICLConfig
from llmad.detectors.icl.cot import AnswerStop, RationaleGuard, answer_cut, parse_answer, rationale_text
from llmad.detectors.icl.detector import ICLDetector
from llmad.errors import LlmadError


def scripted_lm(tokenizer, script: str, eos: bool = False):
    """A tiny Llama whose continuation of the prompt's last two tokens is ``script`` (each next token gets +50
    on its logit for the two tokens before it), then EOS when ``eos``. It keys on the full sequence, so the caller
    generates without a KV cache."""
    import torch
    from transformers import LlamaForCausalLM

    lm = tiny_llama(tokenizer, seed=3)
    tok = lm.tokenizer

    class Scripted(LlamaForCausalLM):
        table: dict[tuple[int, int], int] = {}

        def forward(self, input_ids=None, **kw):
            out = super().forward(input_ids=input_ids, **kw)
            k, width = out.logits.shape[1], input_ids.shape[1]
            bonus = torch.zeros_like(out.logits)
            for b in range(input_ids.shape[0]):
                row = input_ids[b].tolist()
                for j in range(max(1, width - k), width):
                    nxt = self.table.get((row[j - 1], row[j]))
                    if nxt is not None:
                        bonus[b, j - (width - k), nxt] = 50.0
            out.logits = out.logits + bonus
            return out

    model = Scripted(lm.model.config).eval()
    model.load_state_dict(lm.model.state_dict())
    model.generation_config.use_cache = False  # the script needs the whole sequence at every step
    # Every prompt ends with the same assistant cue ("Reasoning:"): its last two tokens start the script.
    end = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    cue = tok(end + "Reasoning:", add_special_tokens=False)["input_ids"][-2:]
    ids = cue + tok(script, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    table = {}
    for i in range(2, len(ids)):
        key = (ids[i - 2], ids[i - 1])
        assert table.get(key, ids[i]) == ids[i], "the script repeats a two-token context with another successor"
        table[key] = ids[i]
    Scripted.table = table
    lm.model = model
    return lm


def cot_detector(lm, **kw) -> ICLDetector:
    cfg = ICLConfig(**{"shots": 1, "mode": "cot", "use_cache": False, "cot_max_new_tokens": 24, "batch_size": 4,
                       **kw})
    return ICLDetector(config=cfg).fit(make_jobs(30, seed=1), None, lm=lm)


@pytest.mark.parametrize("text,label", [
    ("runtime is large. Answer: Abnormal", 1), ("Answer:\nnormal.", 0), ("The answer is Normal", 0),
    ("Answer: not normal", 1), ("Answer: Normal ... wait. Answer: Abnormal", 1),
    ("the job looks abnormal", None), ("Answer: maybe", None), ("", None),
])
def test_parse_answer_needs_an_answer_line(text, label):
    assert parse_answer(text)[0] == label


def test_answer_cut_scores_where_the_label_goes():
    assert answer_cut("runtime is large. Answer: Abnormal") == ("runtime is large. Answer:", 1)
    assert answer_cut("runtime is large.") == ("runtime is large.\nAnswer:", None)
    assert answer_cut("runtime is large. Answer:  ") == ("runtime is large. Answer:", None)  # not twice
    assert answer_cut("Unremarkable, answer: Pathological", ("Unremarkable", "Pathological")) == (
        "Unremarkable, answer:", 1)
    assert rationale_text(" big. Answer: Normal. And more") == "big. Answer: Normal"


def test_rationale_ends_where_the_model_starts_a_new_example():
    text = " stage_in_delay 873 is not normal.\n\nJob:\nwms 5 queue 20 run 1496\nReasoning: x Answer: Normal"
    assert rationale_text(text) == "stage_in_delay 873 is not normal."
    assert answer_cut(text) == (" stage_in_delay 873 is not normal.\nAnswer:", None)  # the later answer is not its own
    assert rationale_text(" Job runtime is long.\nJob runtime again") == "Job runtime is long.\nJob runtime again"


def test_cot_demonstrations_carry_a_rationale_from_their_values(smol_tokenizer, tmp_path):
    from llmad.detectors.icl.demos import demo_reasons, typical_values
    from llmad.data.flowbench import PAPER_FEATURES

    train = make_jobs(30, seed=1)
    typical = typical_values(train, PAPER_FEATURES)
    assert typical["runtime"] == pytest.approx(train.loc[train["label"] == 0, "runtime"].median())
    row = train.iloc[:1].copy()
    row["runtime"] = 10 * typical["runtime"]
    assert demo_reasons(row, PAPER_FEATURES, typical)[0].startswith(
        f"runtime {10 * typical['runtime']:.0f} is 10.0x the normal median")
    det = ICLDetector(config=ICLConfig(shots=2, mode="cot")).fit(train, None, lm=tiny_llama(smol_tokenizer))
    assert det.demos_["reason"].str.contains("x the normal median").all()
    cot_prompt = det.frame(det.shared_demos(), mode="cot").prefix
    assert cot_prompt.count("Reasoning: ") == 2 and "x the normal median" in cot_prompt
    # Score prompts keep the plain demonstrations (LoRA tuning and calibration build those).
    assert "Reasoning:" not in det.frame(det.shared_demos(), mode="score").prefix
    det.save(tmp_path / "m")
    assert ICLDetector.load(tmp_path / "m", lm=det.lm_).shared_demos() == det.shared_demos()


def test_cot_nearest_pool_rationales_survive_save_and_load(smol_tokenizer, tmp_path):
    lm = tiny_llama(smol_tokenizer)
    det = ICLDetector(config=ICLConfig(shots=2, mode="cot", select="nearest", cot_max_new_tokens=4))
    det.fit(make_jobs(30, seed=1), None, lm=lm)
    q = make_jobs(2, seed=6)
    own = det.neighbours(q, 2)
    assert all(len(d) == 3 and "normal median" in d[2] for demos in own for d in demos)
    det.save(tmp_path / "m")
    back = ICLDetector.load(tmp_path / "m", lm=lm)
    assert back.neighbours(q, 2) == own
    a, b = det.score_details(q), back.score_details(q)
    assert a["rationale"].tolist() == b["rationale"].tolist()


def test_guard_penalises_generated_tokens_only_and_bans_repeated_ngrams():
    import torch

    prompt = [5, 6, 7]
    gen = [1, 2, 3, 1, 2]
    ids = torch.tensor([prompt + gen])
    scores = torch.full((1, 10), 2.0)
    scores[0, 9] = -2.0
    out = RationaleGuard(len(prompt), penalty=2.0, ngram=3, exempt=[2])(ids, scores)
    assert out[0, 1] == 1.0 and out[0, 2] == 2.0  # generated token halved; exempt label token untouched
    assert out[0, 5] == 2.0 and out[0, 6] == 2.0  # prompt tokens untouched (HF's own penalty would hit them)
    assert out[0, 3] == float("-inf")  # "1 2" was followed by 3 once: "1 2 3" may not come again
    assert out[0, 9] == -2.0
    assert RationaleGuard(3, 1.0, 0)(ids, scores).equal(scores)  # both off: unchanged


def test_stop_rule_ends_at_the_answer_line(smol_tokenizer):
    lm = scripted_lm(smol_tokenizer, " The runtime is long. Answer: Abnormal. Then more words follow here")
    det = cot_detector(lm)
    d = det.score_details(make_jobs(3, seed=2))
    assert (d["answer_source"] == "generated").all() and (d["parsed"] == 1).all() and (d["score"] == 1.0).all()
    assert (d["rationale"] == "The runtime is long. Answer: Abnormal").all()  # stopped: "Then more" never came
    assert (d["answer"] == "Abnormal").all() and np.isfinite(d["p_abnormal"]).all()
    assert det.counters_["cot_answers_generated"] == 3 and det.counters_.get("cot_max_new_tokens_reached", 0) == 0
    # The stopping criterion alone, on token ids: not before the label word is complete.
    tok = lm.tokenizer
    stop = AnswerStop(tok, 2, ("Normal", "Abnormal"))
    ids = tok("x y It is. Answer: Ab", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert not stop(ids)[0]
    ids = tok("x y It is. Answer: Abnormal", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert stop(ids)[0]


def test_forced_answer_when_the_rationale_ends_without_one(smol_tokenizer):
    lm = scripted_lm(smol_tokenizer, " The runtime is long.", eos=True)
    det = cot_detector(lm)
    q = make_jobs(3, seed=4)
    d = det.score_details(q)
    assert (d["answer_source"] == "forced").all() and (d["rationale"] == "The runtime is long.").all()
    assert d["parsed"].isin([0, 1]).all()
    assert ((d["p_abnormal"] > 0.5).astype(int) == d["parsed"]).all()
    # The forced answer is the label-word score after the rationale + "\nAnswer:", as score mode computes it.
    from llmad.detectors.icl.prompt import PromptGroup

    groups, _ = det.prepare(det.render(q), mode="cot")
    tok = det.lm_.tokenizer
    cut = tok(" The runtime is long.\nAnswer:", add_special_tokens=False)["input_ids"]  # as generated
    g = groups[0]
    lp = det.label_logprobs([PromptGroup(g.prefix_ids, g.rows, [s + cut for s in g.seqs])], len(q), use_cache=False)
    rows = np.array(g.rows)
    p = 1 / (1 + np.exp(-(lp[rows, 1] - lp[rows, 0])))
    np.testing.assert_allclose(d["p_abnormal"].to_numpy()[rows], p, atol=1e-5)


def test_guard_breaks_a_loop_that_plain_greedy_decoding_repeats(smol_tokenizer):
    loop = " runtime is long and" * 8
    lm = scripted_lm(smol_tokenizer, loop)
    plain = cot_detector(lm, repetition_penalty=1.0, no_repeat_ngram=0)
    d0 = plain.score_details(make_jobs(1, seed=5))
    assert d0["rationale"].iloc[0].count("runtime is long and") >= 4  # greedy decoding loops
    assert d0["answer_source"].iloc[0] == "forced" and plain.counters_["cot_max_new_tokens_reached"] == 1
    guarded = cot_detector(lm, no_repeat_ngram=4)
    d1 = guarded.score_details(make_jobs(1, seed=5))
    assert d1["rationale"].iloc[0].count("runtime is long and") == 1
    assert d1["parsed"].iloc[0] in (0, 1)  # every row still gets an answer


def test_cot_config_checks():
    with pytest.raises(LlmadError, match="repetition_penalty"):
        ICLConfig(mode="cot", repetition_penalty=0).validate()
    with pytest.raises(LlmadError, match="no_repeat_ngram"):
        ICLConfig(mode="cot", no_repeat_ngram=-1).validate()


def test_cot_metrics_count_explicit_and_forced_answers():
    from llmad.api.icl import _metrics
    from llmad.metrics.classification import classification_report

    test = pd.DataFrame({"label": [1, 0, 1, 0], "anomaly_type": ["cpu", "normal", "cpu", "normal"]})
    details = pd.DataFrame({"score": [1.0, 0.0, 0.0, 0.5], "parsed": [1, 0, 0, -1],
                            "answer_source": ["generated", "generated", "forced", "none"],
                            "p_abnormal": [0.9, 0.2, 0.4, np.nan]})
    m = _metrics(ICLConfig(mode="cot"), test, details, 1.0, classification_report)
    assert m["parse_rate"] == 0.75 and m["explicit_answer_rate"] == 0.5 and m["forced_answer_rate"] == 0.25
    assert m["unparseable"] == 1 and m["accuracy_on_parsed"] == pytest.approx(2 / 3)
    assert m["answer_roc_auc"] == 1.0
