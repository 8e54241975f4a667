"""Streaming replay and watch on tiny runs built in code: causal context, caching, alerts, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmad.data.context import add_context_features
from llmad.data.flowbench import PAPER_FEATURES, read_run_csv
from llmad.data.reveal import make_partial
from llmad.detectors.base import Detector
from llmad.errors import LlmadWarning
from llmad.metrics.early import ReplaySummary
from llmad.stream import (AlertPolicy, CachedScorer, PeerContext, StreamConfig, Watcher, parse_speed, replay,
                          replay_run, write_feed)

from conftest import make_run_frame


def run_table(run: int, anomalous_host: str | None = "worker1", n_jobs: int = 12) -> pd.DataFrame:
    """A synthetic run parsed exactly like a Flow-Bench member."""
    raw = make_run_frame(run, n_jobs=n_jobs, anomalous_host=anomalous_host)
    # Stage-in timestamps make the stage-in delay a revealed field as in the real data.
    raw.insert(5, "stage_in_start", raw["execute_start"] - raw["stage_in_delay"])
    raw.insert(6, "stage_in_end", raw["execute_start"])
    return read_run_csv(raw.to_csv(index=False).encode(), f"toywf-run{run:04d}.csv")


class RuntimeDetector(Detector):
    """Scores 1 when runtime > 200 s (the synthetic slow host), 0 otherwise or while unknown; counts rows."""

    name = "runtime-rule"

    def __init__(self, cut: float = 200.0):
        self.cut = cut
        self.threshold_ = 0.5
        self.rows = 0
        self.seen: list[pd.DataFrame] = []

    def input_columns(self):
        return ["runtime"]

    def score(self, items: pd.DataFrame) -> np.ndarray:
        self.rows += len(items)
        return (items["runtime"].to_numpy(dtype=float) > self.cut).astype(float)


class RecordingDetector(Detector):
    """Context-reading detector that returns a hash-like score and keeps every row it was asked about."""

    name = "recorder"

    def __init__(self):
        self.threshold_ = 2.0  # never alerts
        self.frames: list[pd.DataFrame] = []

    def input_columns(self):
        from llmad.data.context import CONTEXT_FEATURES

        return list(PAPER_FEATURES) + list(CONTEXT_FEATURES) + ["transformation"]

    def score(self, items: pd.DataFrame) -> np.ndarray:
        self.frames.append(items.copy())
        x = items[PAPER_FEATURES].fillna(-1).to_numpy(dtype=float)
        return (np.abs(np.sin(x.sum(axis=1))) + 0.01 * items["ctx_peers"].fillna(0).to_numpy()) % 1.0


# ------------------------------------------------------------------------------------------------ context
def test_streaming_context_equals_causal_context_at_job_end():
    run = run_table(4, n_jobs=18)
    det = RecordingDetector()
    scorer = CachedScorer(det, det.input_columns(), batch_size=10_000)
    rows = {}
    # Capture the detector row of each job at the instant its execute_end passes.
    orig_request = scorer.request

    def request(key, row, _ends=dict(zip(run["job_id"], run["execute_end"]))):
        rows.setdefault(row["job_id"], []).append(row)
        orig_request(key, row)

    scorer.request = request
    replay_run(run, scorer, None, context=True)
    ref = add_context_features(run, causal=True).set_index("job_id")
    ends = run.set_index("job_id")["execute_end"]
    unique_end = ~ends.duplicated(keep=False)
    checked = 0
    for job, obs in rows.items():
        at_end = [r for r in obs if r.get("execute_end") == ends[job]]
        if not unique_end[job] or not at_end:
            continue
        r = at_end[0]  # the observation at the instant execute_end passed
        for c in ("ctx_runtime_rel", "ctx_cpu_rel", "ctx_cpu_util", "ctx_host_slowness", "ctx_host_cpu_slowness",
                  "ctx_host_jobs", "ctx_peers"):
            assert r[c] == pytest.approx(ref.loc[job, c], nan_ok=True), (job, c)
        checked += 1
    assert checked >= 10


def test_run_context_state_round_trip():
    run = run_table(5)
    rc = PeerContext(True)
    for _, r in run.iterrows():
        rc.step({r["job_id"]: {c: r[c] for c in ("transformation", "host", "runtime", "execute_end",
                                                 "kickstart_executables_cpu_time", "queue_delay")}})
    back = PeerContext.from_state(json.loads(json.dumps(rc.to_state())), True)
    for j in run["job_id"]:
        a, b = rc.row(j), back.row(j)
        assert a.keys() == b.keys()
        for c in a:
            assert a[c] == pytest.approx(b[c], nan_ok=True) if isinstance(a[c], float) else a[c] == b[c]


# ------------------------------------------------------------------------------------------------ scoring
def _naive_scores(run: pd.DataFrame, det: Detector) -> list[tuple[str, float, float]]:
    """Score the job as known at each of its events, one row at a time (no cache, no context)."""
    out = []
    ts_cols = [c for c in ("ready", "submit", "stage_in_start", "stage_in_end", "execute_start", "execute_end",
                           "post_script_start", "post_script_end") if c in run.columns]
    for _, r in run.iterrows():
        for t in sorted(set(float(r[c]) for c in ts_cols if pd.notna(r[c]))):
            out.append((r["job_id"], t, float(det.score(make_partial(run.loc[[r.name]], t))[0])))
    return sorted(out)


@pytest.mark.parametrize("batch,cache_size", [("run", 200_000), ("step", 200_000), ("run", 3)])
def test_cached_batched_replay_equals_naive_per_event_scoring(batch, cache_size):
    run = run_table(6)
    det = RuntimeDetector()
    scorer = CachedScorer(det, det.input_columns(), batch_size=7, cache_size=cache_size)
    seen = []
    orig = scorer.score
    out = replay_run(run, scorer, AlertPolicy(0.5), context=False, batch=batch, keep_statistic=True)
    assert out.events == int(run[[c for c in run.columns if c in (
        "ready", "submit", "stage_in_start", "stage_in_end", "execute_start", "execute_end", "post_script_start",
        "post_script_end")]].notna().sum().sum())
    naive = _naive_scores(run, RuntimeDetector())
    # Per job: the max over its observations equals the naive max over its events.
    nmax = pd.DataFrame(naive, columns=["job", "t", "s"]).groupby("job")["s"].max()
    got = out.jobs.set_index("job_id")["max_score"]
    assert (got.loc[nmax.index].to_numpy() == nmax.to_numpy()).all()
    assert scorer.model_rows < out.observations  # caching did skip work
    del seen, orig


def test_replay_alert_times_leads_and_summary():
    runs = [run_table(7), run_table(8, anomalous_host=None)]
    det = RuntimeDetector()
    res = replay(iter(runs), det, StreamConfig(), 0.5)
    m = res.metrics
    assert m["caught_share"] == 1.0 and m["false_alerts"] == 0
    assert m["normal_runs"] == 1 and m["false_alerts_per_normal_run"] == 0.0
    # runtime becomes known at execute_end: caught by, not before, it; lead to job end = post-script (6 s here).
    assert m["caught_by_execute_end_share"] == 1.0 and m["caught_before_execute_end_share"] == 0.0
    assert m["median_lead_job_s"] == 6.0
    curve = res.curve
    assert curve["caught_share"].iloc[-1] == 1.0 and curve["caught_share"].iloc[0] == 0.0
    assert curve["caught_share"].is_monotonic_increasing


def test_replay_paced_equals_max_speed():
    run = run_table(9)
    a = replay_run(run, CachedScorer(RuntimeDetector(), ["runtime"]), AlertPolicy(0.5), context=False)
    b = replay_run(run, CachedScorer(RuntimeDetector(), ["runtime"]), AlertPolicy(0.5), context=False,
                   speed=1e7)
    assert a.alerts == b.alerts and len(a.alerts) > 0
    assert parse_speed("max") is None and parse_speed("20x") == 20.0


def test_features_reveal_first_correct_step():
    runs = [run_table(10)]
    res = replay(iter(runs), RuntimeDetector(), StreamConfig(reveal="features"), 0.5)
    steps = {r["step"]: r for r in res.metrics["steps"]}
    # runtime is the paper's third feature: anomalous jobs become right at T3, normal ones are right from T1.
    assert steps["T2"]["recall_anomalous"] == 0.0 and steps["T3"]["recall_anomalous"] == 1.0
    assert steps["T3"]["first_correct_share_anomalous"] == 1.0
    assert res.metrics["median_first_correct_step_anomalous"] == 3.0


# ------------------------------------------------------------------------------------------------ alerts
def test_alert_policy_threshold_and_k_of_n():
    thr = AlertPolicy(0.5)
    st = thr.new_state()
    assert [thr.observe(st, s) for s in (0.1, 0.6, 0.9)] == [False, True, False]
    kn = AlertPolicy(0.5, "k-of-n", k=2, n=3)
    st = kn.new_state()
    assert [kn.observe(st, s) for s in (0.6, 0.1, 0.1, 0.7, 0.2, 0.8)] == [False] * 5 + [True]
    rng = np.random.default_rng(0)
    for _ in range(300):
        s = rng.random(rng.integers(1, 9))
        for pol in (AlertPolicy(0.7), AlertPolicy(0.7, "k-of-n", 2, 3), AlertPolicy(0.6, "k-of-n", 3, 4)):
            st = pol.new_state()
            fired = any([pol.observe(st, v) for v in s])
            assert fired == (pol.statistic(s) >= pol.threshold)


def test_summary_counts_false_alerts_per_run():
    jobs = pd.DataFrame({"run_id": "r", "workflow": "w", "label": [1, 0, 0], "anomaly_type": ["cpu_2", "normal",
                                                                                              "normal"],
                         "alerted": [True, True, False], "alert_before_execute_end": [True, False, False],
                         "alert_by_execute_end": [True, True, False], "lead_job_s": [10.0, 3.0, np.nan],
                         "lead_run_s": [100.0, 50.0, np.nan], "lead_execute_end_s": [5.0, 0.0, np.nan],
                         "alert_life_frac": [0.25, 0.9, np.nan]})
    s = ReplaySummary()
    s.add(jobs)
    m = s.metrics()
    assert m["false_alerts"] == 1 and m["caught_share"] == 1.0 and m["median_lead_job_s"] == 10.0
    c = s.curve().set_index("life_fraction")
    assert c.loc[0.24, "caught_share"] == 0.0 and c.loc[0.25, "caught_share"] == 1.0
    assert c.loc[0.9, "false_alert_share"] == 0.5


# ------------------------------------------------------------------------------------------------ watch
def _feed(tmp_path: Path, fmt: str = "jsonl") -> Path:
    path = tmp_path / f"feed.{fmt}"
    write_feed([run_table(11), run_table(12, anomalous_host="worker2")], path, fmt)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_watch_alerts_match_replay(tmp_path, fmt):
    feed = _feed(tmp_path, fmt)
    w = Watcher(RuntimeDetector(), 0.5, alerts_path=tmp_path / "a.jsonl", state_path=tmp_path / "s.json")
    info = w.run(str(feed), follow=False)
    assert info["malformed"] == 0 if "malformed" in info else True
    got = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    ref = []
    for r in (run_table(11), run_table(12, anomalous_host="worker2")):
        ref += replay_run(r, CachedScorer(RuntimeDetector(), ["runtime"]), AlertPolicy(0.5), context=False).alerts
    assert sorted((a["run_id"], a["job_id"], a["time"], a["phase"]) for a in got) == sorted(
        (a["run_id"], a["job_id"], a["time"], a["phase"]) for a in ref)
    assert len(got) > 0


def test_watch_resume_after_crash_is_exactly_once(tmp_path):
    feed = _feed(tmp_path)
    lines = feed.read_bytes().splitlines(keepends=True)
    full = Watcher(RuntimeDetector(), 0.5, alerts_path=tmp_path / "full.jsonl", state_path=tmp_path / "full.st")
    full.run(str(feed), follow=False)
    expected = (tmp_path / "full.jsonl").read_bytes()
    # Grow the feed in three pieces; "crash" between writing state and appending alerts after each piece.
    grow = tmp_path / "grow.jsonl"
    grow.write_bytes(b"")
    cuts = [len(lines) // 3, 2 * len(lines) // 3, len(lines)]
    start = 0
    for i, cut in enumerate(cuts):
        with open(grow, "ab") as fh:
            fh.write(b"".join(lines[start:cut]))
        start = cut
        w = Watcher(RuntimeDetector(), 0.5, alerts_path=tmp_path / "grow.out", state_path=tmp_path / "grow.st",
                    batch_lines=17, checkpoint_s=0.0)
        if i < 2:
            # Crash at the worst moment: the state (with the batch's alerts) is saved, the alerts are not written.
            calls = {"n": 0}
            real = w._commit_alerts

            def crashing(resume=False, calls=calls, real=real):
                calls["n"] += 1
                if calls["n"] == 4:
                    raise KeyboardInterrupt
                real(resume)

            w._commit_alerts = crashing
            with pytest.raises(KeyboardInterrupt):
                w.run(str(grow), follow=False)
        else:
            w.run(str(grow), follow=False)
    assert (tmp_path / "grow.out").read_bytes() == expected


def test_watch_reports_malformed_and_partial_lines(tmp_path):
    feed = tmp_path / "f.jsonl"
    good = [json.dumps(r) for r in (
        {"run_id": "r1", "job_id": "a", "ready": 1.0, "execute_start": 2.0, "execute_end": 500.0},
        {"run_id": "r1", "job_id": "b", "ready": 1.0, "execute_start": 2.0, "execute_end": 50.0})]
    feed.write_text("\n".join([good[0], "{not json", '{"run_id": "r1"}', '{"job_id": "c", "runtime": "fast"}',
                               "[1, 2]", good[1]]) + "\n" + '{"run_id": "r1", "job_id": "d", "exec')
    logs = []
    w = Watcher(RuntimeDetector(), 0.5, alerts_path=tmp_path / "a.jsonl", state_path=tmp_path / "s.json",
                log=logs.append)
    with pytest.warns(LlmadWarning) as caught:
        info = w.run(str(feed), follow=False)
    assert info["records"] == 2 and info["malformed"] == 4 and info["partial_last_line"] == 1
    assert {c.message.name for c in caught} == {"malformed-line"} and "line 2: " in str(caught[0].message)
    assert any("partial last line" in m for m in logs)
    alerts = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [a["job_id"] for a in alerts] == ["a"]  # runtime derived from execute_end - execute_start
    # The writer completes the last line: a restart reads it (and only it).
    with open(feed, "a") as fh:
        fh.write('ute_start": 2.0, "execute_end": 900.0}\n')
    w2 = Watcher(RuntimeDetector(), 0.5, alerts_path=tmp_path / "a.jsonl", state_path=tmp_path / "s.json",
                 log=logs.append)
    info2 = w2.run(str(feed), follow=False)
    assert info2["resumed"] and info2["records"] == 3
    alerts = [json.loads(x)["job_id"] for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert alerts == ["a", "d"]


def test_watch_refuses_changed_rule_and_truncated_feed(tmp_path):
    from llmad.errors import LlmadError

    feed = _feed(tmp_path)
    Watcher(RuntimeDetector(), 0.5, alerts_path=tmp_path / "a", state_path=tmp_path / "s").run(str(feed),
                                                                                                 follow=False)
    with pytest.raises(LlmadError, match="another alert rule"):
        Watcher(RuntimeDetector(), 0.4, alerts_path=tmp_path / "a", state_path=tmp_path / "s").run(str(feed),
                                                                                                     follow=False)
    feed.write_text("")
    with pytest.raises(LlmadError, match="shorter"):
        Watcher(RuntimeDetector(), 0.5, alerts_path=tmp_path / "a", state_path=tmp_path / "s").run(str(feed),
                                                                                                     follow=False)


def test_load_detector_dispatch(tmp_path):
    from llmad.detectors import load_detector
    from llmad.detectors.baselines import BaselineDetector
    from llmad.errors import LlmadError

    runs = pd.concat([run_table(i, anomalous_host="worker1" if i % 2 else None) for i in range(20, 26)],
                     ignore_index=True)
    det = BaselineDetector("rf", "plain", n_estimators=10).fit(runs, runs)
    det.save(tmp_path / "m")
    back = load_detector(tmp_path / "m")
    assert isinstance(back, BaselineDetector)
    np.testing.assert_array_equal(back.score(runs), det.score(runs))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "detector.json").write_text('{"kind": "nope"}')
    with pytest.raises(LlmadError, match="unknown detector kind"):
        load_detector(tmp_path / "bad")


def test_split_run_ids_match_load_split(tiny_zip):
    from llmad.data import load_split
    from llmad.stream import split_run_ids

    ids = split_run_ids(str(tiny_zip), "run", seed=3)
    sp = load_split(str(tiny_zip), "run", seed=3)
    for part in ("train", "validation", "test"):
        assert ids[part] == sorted(sp.part(part)["run_id"].unique())
