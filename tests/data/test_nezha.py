"""Nezha TrainTicket loader: real archive (labels from inject_time, both views, both splits) and bad input."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmad.data import nezha
from llmad.errors import DataError, LlmadError


@pytest.fixture(scope="module")
def pod_series():
    return nezha.load_series("trainticket", view="pod")


@pytest.mark.integration
def test_real_pod_view_counts_and_labels(pod_series):
    series, faults, info = pod_series
    assert len(faults) == 45
    assert faults["type"].value_counts().to_dict() == {"network_delay": 14, "exception": 13, "return": 11,
                                                       "cpu_contention": 7}
    assert len({s.meta["group"] for s in series}) == 46  # one group per service, both days
    assert all(s.values.shape[1] == 19 for s in series)
    # every fault labels about 3 one-minute points on its own pod, nothing elsewhere
    labelled = {int(e) for s in series for e in np.unique(s.event_ids) if e >= 0}
    assert labelled == set(range(45))
    per_event = pd.Series(np.concatenate([s.event_ids[s.event_ids >= 0] for s in series])).value_counts()
    assert per_event.between(2, 4).all()


@pytest.mark.integration
def test_real_labels_use_inject_time_not_the_shifted_epoch(pod_series):
    series, faults, _ = pod_series
    f = faults.iloc[0]
    assert str(f["inject_time"]) == "2023-01-29 08:43:04"
    s = next(s for s in series if s.meta["pod"] == f["pod"])
    t = s.timestamps[s.event_ids == f["fault_id"]]
    assert t.min() >= np.datetime64("2023-01-29T08:43:04") and t.max() <= np.datetime64("2023-01-29T08:46:04")
    # the epoch field is ~8 h off on this day: using it would label nothing in the recorded range
    epoch = np.datetime64(int(f["inject_timestamp"]), "s")
    assert abs((epoch - np.datetime64("2023-01-29T08:43:04")).astype(int)) > 7 * 3600


@pytest.mark.integration
def test_real_time_split_is_ordered_and_keeps_faults():
    sp = nezha.make_split("trainticket", split="time")
    end_train = max(s.timestamps[-1] for s in sp.train)
    start_val = min(s.timestamps[0] for s in sp.validation)
    end_val = max(s.timestamps[-1] for s in sp.validation)
    start_test = min(s.timestamps[0] for s in sp.test)
    assert end_train < start_val and end_val < start_test
    summ = sp.summary()
    assert (summ["train"]["events"], summ["validation"]["events"], summ["test"]["events"]) == (27, 9, 9)


@pytest.mark.integration
def test_real_fault_split_hides_test_types():
    sp = nezha.make_split("trainticket", split="fault", test_types=["cpu_contention"])
    seen = {t for s in sp.train + sp.validation for e, t in s.event_types.items() if (s.event_ids == e).any()}
    assert "cpu_contention" not in seen and {"return", "exception", "network_delay"} <= seen
    test_types = {t for s in sp.test for t in s.event_types.values()}
    assert test_types == {"cpu_contention"}
    assert sum(int(s.labels.sum()) for s in sp.validation) > 0  # a threshold can be chosen
    with pytest.raises(LlmadError, match="unknown fault type"):
        nezha.make_split("trainticket", split="fault", test_types=["meteor"])


@pytest.mark.integration
def test_real_system_view():
    series, faults, _ = nezha.load_series("trainticket", view="system")
    assert len(series) == 2 and series[0].values.shape[1] > 46 * 19  # all pods + front service
    assert {int(e) for s in series for e in np.unique(s.event_ids) if e >= 0} == set(range(45))


def _pod_csv(times: list[str], pod: str) -> str:
    rows = ["Time,TimeStamp,PodName,CpuUsage(m),MemoryUsage(Mi)"]
    for i, t in enumerate(times):
        rows.append(f"{t}.1 +0000 UTC m=+1.0,0,{pod},{1.0 + i},{2.0}")
    return "\n".join(rows) + "\n"


def _zip(tmp: Path, members: dict[str, str]) -> Path:
    p = tmp / "nz.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return p


def test_empty_pod_is_skipped_and_its_fault_dropped(tmp_path):
    times = [f"2023-01-29 10:{m:02d}:10" for m in range(20)]
    fl = {"10": [{"inject_time": "2023-01-29 10:05:00", "inject_timestamp": "1", "inject_type": "return",
                  "inject_pod": "ts-a-service-1234567890-abcde"},
                 {"inject_time": "2023-01-29 10:12:00", "inject_timestamp": "1", "inject_type": "cpu_contention",
                  "inject_pod": "ts-b-service-1234567890-vwxyz"}]}
    z = _zip(tmp_path, {
        "rca_data/2023-01-29/metric/ts-a-service-1234567890-abcde_metric.csv": _pod_csv(times, "a"),
        "rca_data/2023-01-29/metric/ts-b-service-1234567890-vwxyz_metric.csv": "",
        "rca_data/2023-01-29/2023-01-29-fault_list.json": json.dumps(fl)})
    series, faults, info = nezha.load_series(str(z))
    assert [s.meta["group"] for s in series] == ["ts-a-service"]
    assert any("ts-b-service" in n for n in info["skipped"])
    assert len(info["dropped_faults"]) == 1 and len(faults) == 1
    assert series[0].labels.sum() == 3  # 10:05:10, 10:06:10, 10:07:10 lie in [10:05:00, 10:08:00]


def test_gap_in_timestamps_splits_the_series(tmp_path):
    times = [f"2023-01-29 10:{m:02d}:10" for m in range(10)] + [f"2023-01-29 12:{m:02d}:10" for m in range(10)]
    fl = {"10": [{"inject_time": "2023-01-29 10:03:00", "inject_timestamp": "1", "inject_type": "return",
                  "inject_pod": "ts-a-service-1234567890-abcde"}]}
    z = _zip(tmp_path, {
        "rca_data/2023-01-29/metric/ts-a-service-1234567890-abcde_metric.csv": _pod_csv(times, "a"),
        "rca_data/2023-01-29/2023-01-29-fault_list.json": json.dumps(fl)})
    series, _, _ = nezha.load_series(str(z))
    assert [len(s) for s in series] == [10, 10]


def test_archive_without_fault_list_is_a_data_error(tmp_path):
    z = _zip(tmp_path, {"rca_data/2023-01-29/metric/ts-a-service-1234567890-abcde_metric.csv":
                        _pod_csv(["2023-01-29 10:00:10"], "a")})
    with pytest.raises(DataError, match="fault_list"):
        nezha.load_series(str(z))
    with pytest.raises(DataError):
        nezha.load_series(str(tmp_path / "missing.zip"))
