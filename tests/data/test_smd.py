"""SMD / ASD npz loaders on the real files, and their bad-input errors."""
from __future__ import annotations

import numpy as np
import pytest

from llmad.data import smd
from llmad.errors import DataError


@pytest.mark.integration
def test_real_asd_split_fractions_and_types():
    sp = smd.make_split("asd", "omi-1", val_fraction=0.3)
    assert [s.values.shape for s in sp.train] == [(8640, 19)]
    assert not sp.train[0].labeled and sp.validation[0].labeled
    v, t = sp.validation[0], sp.test[0]
    assert len(v) == round(4320 * 0.3) and len(v) + len(t) == 4320
    assert int(v.labels.sum() + t.labels.sum()) == 441
    types = set(v.event_types.values()) | set(t.event_types.values())
    assert types <= {"metric", "temporal", "metric-temporal"} and "temporal" in types


@pytest.mark.integration
def test_real_smd_machine_and_all_spec():
    assert len(smd.find_files("smd", "all")) == 19
    assert [f.stem for f in smd.find_files("smd", "machine-1-2,machine-3-10")] == ["machine-1-2", "machine-3-10"]
    sp = smd.make_split("smd", "machine-1-2")
    assert sp.train[0].values.shape == (23694, 38)
    assert int(sp.validation[0].labels.sum() + sp.test[0].labels.sum()) == 542


def test_unknown_machine_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="unknown machine"):
        smd.find_files("smd", "machine-9-9")
    bad = tmp_path / "x.npz"
    np.savez(bad, train=np.zeros((10, 3)), test=np.zeros((10, 3)))
    with pytest.raises(DataError, match="test_label"):
        smd.load_machine(bad, "smd")
    np.savez(bad, train=np.zeros((10, 3)), test=np.zeros((10, 3)), test_label=np.zeros(9))
    with pytest.raises(DataError, match="9 test labels"):
        smd.load_machine(bad, "smd")
    np.savez(bad, train=np.zeros((10, 3)), test=np.zeros((10, 3)), test_label=np.full(10, 2))
    with pytest.raises(DataError, match="0/1"):
        smd.load_machine(bad, "smd")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read"):
        smd.load_machine(tmp_path / "junk.npz", "smd")


def test_npz_path_spec_with_nan_and_inf(tmp_path):
    f = tmp_path / "m.npz"
    test = np.ones((20, 2), np.float32)
    test[3, 0], test[4, 1] = np.nan, np.inf
    lab = np.zeros(20, np.uint8)
    lab[10:13] = 1
    np.savez(f, train=np.ones((30, 2), np.float32), test=test, test_label=lab)
    sp = smd.make_split("smd", str(f), val_fraction=0.5)
    assert np.isnan(sp.validation[0].values[3, 0]) and np.isnan(sp.validation[0].values[4, 1])  # inf -> NaN
    assert sp.test[0].labels.sum() == 3
