"""The one dataset-spec parser: kinds, families, existing paths, clear errors."""
import pytest

from llmad.data.specs import parse_spec, spec_family, spec_name
from llmad.errors import LlmadError


def test_parse_spec_kinds_paths_and_families(tiny_zip):
    assert parse_spec("flowbench:1000genome") == ("flowbench", "1000genome")
    assert parse_spec("smd:all", family="series") == ("smd", "all")
    assert parse_spec(str(tiny_zip), family="jobs") == ("flowbench", str(tiny_zip))
    with pytest.raises(LlmadError, match="numeric dataset kind 'flowbench'"):
        parse_spec("flowbench:montage", family="series")
    with pytest.raises(LlmadError, match="needs job data"):
        parse_spec("nezha:trainticket", family="jobs")
    with pytest.raises(LlmadError, match="expected KIND:NAME"):
        parse_spec("nosuch:thing")
    with pytest.raises(LlmadError, match="numeric dataset spec"):
        parse_spec("trainticket", family="series")


def test_spec_family_and_folder_name():
    assert spec_family("asd:omi-1") == "series" and spec_family("flowbench:montage") == "jobs"
    assert spec_name("flowbench:a,b") == "a+b" and spec_name("csv:/x/y.csv") == "_x_y.csv"
