"""The benchmarks' shared output schema: one envelope with the machine, read back by one reader."""
from __future__ import annotations

import json

import pytest

from mtan_ros.benchmarks.report import SCHEMA, machine, read_json, write_json
from mtan_ros.errors import ConfigError


def test_written_results_carry_the_schema_machine_settings_and_rows(tmp_path):
    path = write_json(tmp_path / "sub" / "out.json", "node", [{"camera": "480x640", "ms": 12.5}],
                      settings={"frames": 20}, seconds=3.0)
    document = json.loads(path.read_text())
    assert document["schema"] == SCHEMA and document["benchmark"] == "node"
    assert document["rows"] == [{"camera": "480x640", "ms": 12.5}]
    assert document["settings"] == {"frames": 20} and document["seconds"] == 3.0
    assert document["machine"]["cores"] >= 1 and document["machine"]["torch"]
    assert set(document["machine"]["cpu_flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert read_json(path) == document


def test_machine_names_the_cpu_this_process_may_use():
    info = machine()
    assert isinstance(info["cpu"], str) and info["cores"] >= 1 and info["python"].count(".") == 2


@pytest.mark.parametrize("content", ['{"rows": []}', "[1, 2]", "not json"])
def test_anything_else_is_refused_in_one_line(tmp_path, content):
    path = tmp_path / "other.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="benchmark result"):
        read_json(path)
