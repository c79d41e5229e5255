"""The multi-camera benchmark's bookkeeping: which answers count for a camera, and the verdicts (no ROS)."""
from __future__ import annotations

import os

from mtan_ros.benchmarks.multi_camera import _camera_row, _verdicts, cpu_seconds, group_pids, rss_bytes


def test_only_answers_with_the_cameras_frame_id_size_and_stamp_sequence_count():
    base, rate = 1700000000.0, 5.0
    seen = [(base + i / rate, "cam0_optical", 480, 640, base + i / rate + 0.05) for i in range(0, 10, 2)]
    seen += [(base + 0.2, "cam0_optical", 480, 640, base + 0.25)]  # frame 1 answered
    seen += [(base + 0.2, "cam0_optical", 480, 640, base + 0.35)]  # the same frame again: one answer
    seen += [(base + 0.4, "cam1_optical", 480, 640, base + 0.45),  # another camera's frame_id
             (base + 0.6, "cam0_optical", 720, 1280, base + 0.65),  # another size
             (base + 0.3, "cam0_optical", 480, 640, base + 0.35)]  # between two frames of the sequence
    row = _camera_row(seen, (480, 640), "cam0_optical", 10, rate, {"frames_received": "9", "frames_dropped": "2"})
    assert (row["answered"], row["wrong"], row["sent"], row["reached_node"], row["dropped"]) == (6, 3, 10, 9, 2)
    assert round(row["latency_ms_p50"]) == 50 and row["size"] == "480x640"


def _result(setup: str, answered: list[int], rss_mb: float) -> dict:
    rows = [{"answered": a, "sent": 50} for a in answered]
    return {"setup": setup, "cameras": len(answered), "rows": rows, "answered": sum(answered), "wrong": 0,
            "rss_mb": rss_mb, "cpu_s": 10.0}


def test_the_verdicts_name_each_target_met_or_missed():
    (line,) = _verdicts([_result("one node", [45, 41, 50], 600.0), _result("3 nodes", [50, 50, 40], 1500.0)])
    assert "one node answered >= 82% of each camera's frames (target 80%: met" in line
    assert "RSS 0.40x the 3 nodes' (target <= 0.45: met)" in line
    assert "answered 0.97x theirs (target >= 0.95: met)" in line
    (line,) = _verdicts([_result("one node", [30, 50], 800.0), _result("2 nodes", [50, 50], 1000.0)])
    assert "(target 80%: missed" in line and "(target <= 0.45: missed)" in line and "(target >= 0.95: missed)" in line


def test_this_process_group_is_found_with_its_memory_and_cpu_time():
    pids = group_pids(os.getpgid(0))
    assert os.getpid() in pids
    assert rss_bytes([os.getpid()]) > 10 * 2**20 and cpu_seconds([os.getpid()]) > 0
