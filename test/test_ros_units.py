"""The node's building blocks without DDS: point clouds, camera_info scaling, the frame slot,
throttling, diagnostics, QoS and the parameter defaults file."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from ros_helpers import camera_info_msg  # noqa: E402
from sensor_msgs.msg import PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mtan_ros.ros import params as ros_params  # noqa: E402
from mtan_ros.ros import qos  # noqa: E402
from mtan_ros.ros.diagnostics import (  # noqa: E402
    LatencyWindow,
    PipelineStats,
    RateMeter,
    diagnostic_status,
    status_values,
)
from mtan_ros.ros.frame_slot import LatestFrameSlot  # noqa: E402
from mtan_ros.ros.pointcloud import PointCloudBuilder, cloud_to_array, intrinsics_for, scaled_camera_info  # noqa: E402
from mtan_ros.ros.throttle import Throttle  # noqa: E402


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- point cloud


def test_point_cloud_back_projects_in_metres_with_colour_and_label():
    height, width = 6, 8
    depth = np.full((height, width), 2.0, np.float32)
    depth[0, 0] = np.nan      # no estimate: no point
    depth[0, 2] = 0.0         # not positive: no point
    depth[4, 6] = 5.0
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[4, 6] = (10, 20, 30)
    labels = np.arange(height * width, dtype=np.uint8).reshape(height, width) % 7
    info = camera_info_msg(width, height, fx=4.0)  # cx = 3.5, cy = 2.5
    header = Header(frame_id="cam_optical")
    cloud = PointCloudBuilder().build(header, depth, rgb, labels, info, stride=2)

    assert cloud.header.frame_id == "cam_optical"
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1), ("label", 16, PointField.UINT8, 1)]
    assert cloud.point_step == 20 and cloud.height == 1 and cloud.is_dense
    sampled = depth[::2, ::2]
    assert cloud.width == np.count_nonzero(np.isfinite(sampled) & (sampled > 0)) == 10
    assert cloud.row_step == 20 * cloud.width and len(cloud.data) == cloud.row_step
    points = cloud_to_array(cloud)
    far = points[points["z"] == 5.0]
    assert len(far) == 1
    # u = 6, v = 4: x = (6 - 3.5) / 4 * 5, y = (4 - 2.5) / 4 * 5
    assert far["x"][0] == pytest.approx(3.125) and far["y"][0] == pytest.approx(1.875)
    assert far["rgb"][0] == (10 << 16) | (20 << 8) | 30
    assert far["label"][0] == labels[4, 6]
    assert set(points["label"]) <= set(range(7))


def test_point_cloud_scales_intrinsics_to_the_image_size():
    info = camera_info_msg(2048, 1024, fx=2262.0)
    fx, fy, cx, cy = intrinsics_for(info, 512, 256)
    assert fx == pytest.approx(2262.0 / 4) and fy == pytest.approx(2262.0 / 4)
    assert cx == pytest.approx((1023.5 + 0.5) / 4 - 0.5) and cy == pytest.approx((511.5 + 0.5) / 4 - 0.5)
    scaled = scaled_camera_info(info, Header(frame_id="f"), 512, 256)
    assert (scaled.width, scaled.height) == (512, 256) and scaled.header.frame_id == "f"
    assert scaled.k[0] == pytest.approx(fx) and scaled.k[2] == pytest.approx(cx) and scaled.k[5] == pytest.approx(cy)
    assert scaled.p[0] == pytest.approx(fx) and scaled.p[6] == pytest.approx(cy)
    same = scaled_camera_info(info, Header(), 2048, 1024)
    assert list(same.k) == list(info.k) and list(same.p) == list(info.p)


def test_point_cloud_refuses_uncalibrated_camera_info():
    info = camera_info_msg(8, 6)
    info.k = [0.0] * 9
    with pytest.raises(ValueError, match="calibrate"):
        PointCloudBuilder().build(Header(), np.ones((6, 8), np.float32), np.zeros((6, 8, 3), np.uint8),
                                  np.zeros((6, 8), np.uint8), info)


def test_point_cloud_empty_when_no_depth():
    info = camera_info_msg(8, 6)
    cloud = PointCloudBuilder().build(Header(), np.full((6, 8), np.nan, np.float32), np.zeros((6, 8, 3), np.uint8),
                                      np.zeros((6, 8), np.uint8), info, stride=1)
    assert cloud.width == 0 and len(cloud.data) == 0


# ---------------------------------------------------------------- frame slot


def test_slot_keeps_only_the_newest_and_reports_replacements():
    slot = LatestFrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True      # 1 was never taken: dropped
    assert slot.take(0) == 2
    assert slot.take(0) is None
    assert slot.put(3) is False


def test_slot_wakes_a_waiting_worker_and_closes():
    slot = LatestFrameSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    worker.start()
    slot.put("frame")
    worker.join(5)
    assert got == ["frame"]
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    worker.start()
    slot.close()
    worker.join(5)
    assert not worker.is_alive() and got[-1] is None and slot.closed


# ---------------------------------------------------------------- throttle


def test_throttle_is_per_key_and_counts_suppressed():
    clock = FakeClock()
    throttle = Throttle(5.0, clock)
    assert throttle.message("encoding", "mono16") == "mono16"
    assert throttle.message("encoding", "mono16") is None
    assert throttle.message("encoding", "mono16") is None
    assert throttle.message("compressed", "corrupt") == "corrupt"   # another problem is not hidden
    clock.now += 5.0
    assert throttle.message("encoding", "mono16") == "mono16 (2 more since the last such warning)"
    zero = Throttle(0.0, clock)
    assert zero.ready("k") and zero.ready("k")


# ---------------------------------------------------------------- diagnostics


def test_rate_meter_and_percentiles():
    clock = FakeClock()
    meter = RateMeter(window_s=2.0, clock=clock)
    for _ in range(20):
        clock.now += 0.1
        meter.tick()
    assert meter.rate() == pytest.approx(10.0, rel=0.11)
    clock.now += 10
    assert meter.rate() == 0.0
    window = LatencyWindow(size=100)
    assert np.isnan(window.percentile(50))
    for ms in range(1, 101):
        window.add(ms)
    assert window.percentile(50) == pytest.approx(50.5)
    assert window.percentile(95) == pytest.approx(np.percentile(np.arange(1, 101), 95))


def test_pipeline_stats_to_diagnostic_status():
    clock = FakeClock()
    stats = PipelineStats(clock=clock)
    status = diagnostic_status("/ns/perception_node: perception", stats.snapshot(), device="cpu",
                               precision="fp32", input_topic="/ns/image_raw")
    assert status.level == status.WARN and "waiting for images on /ns/image_raw" in status.message
    stats.on_received(False)
    stats.on_received(True)
    stats.on_rejected("bad encoding")
    stats.on_published(inference_ms=40.0, processing_ms=45.0, latency_ms=50.0)
    stats.on_idle()
    values = status_values(diagnostic_status("n", stats.snapshot(), device="cuda:0", precision="fp16",
                                             input_topic="t", extra={"model_path": "m.pt"}))
    assert values["frames_received"] == "2" and values["frames_dropped"] == "1"
    assert values["frames_rejected"] == "1" and values["frames_processed"] == "1"
    assert values["frames_skipped_no_subscriber"] == "1"
    assert values["inference_ms_p50"] == "40.0" and values["latency_ms_p95"] == "50.0"
    assert values["processing_ms_p50"] == "45.0"
    assert values["device"] == "cuda:0" and values["precision"] == "fp16" and values["model_path"] == "m.pt"
    assert {"input_rate_hz", "output_rate_hz", "last_problem"} <= set(values)
    clock.now += 60
    stale = diagnostic_status("n", stats.snapshot(), device="cpu", precision="fp32", input_topic="t")
    assert stale.level == stale.WARN and "no image on t for 60 s" in stale.message


# ---------------------------------------------------------------- QoS


def test_qos_choices():
    from rclpy.qos import HistoryPolicy, ReliabilityPolicy

    assert qos.image_input_qos().reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos.image_input_qos().depth == 1 and qos.image_input_qos().history == HistoryPolicy.KEEP_LAST
    assert qos.output_qos().reliability == ReliabilityPolicy.RELIABLE
    assert qos.camera_info_qos().reliability == ReliabilityPolicy.BEST_EFFORT


# ---------------------------------------------------------------- parameters


def test_defaults_file_declares_exactly_the_node_parameters():
    values = ros_params.load_defaults()
    assert set(values) == {spec.name for spec in ros_params.SPECS}
    for spec in ros_params.SPECS:
        assert isinstance(values[spec.name], spec.kind), spec.name
        assert spec.description
        if spec.range is not None:
            assert spec.range[0] <= values[spec.name] <= spec.range[1], spec.name
        if not spec.runtime:
            assert "restart" in spec.restart_reason


def test_defaults_file_mistakes_are_reported(tmp_path):
    good = ros_params.load_defaults()
    bad = dict(good, overlay_alpa=0.3)
    del bad["overlay_alpha"]
    path = tmp_path / "p.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": bad}}))
    with pytest.raises(ros_params.ConfigError, match=r"missing parameters \['overlay_alpha'\].*overlay_alpa"):
        ros_params.load_defaults(path)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": dict(good, points_stride="4")}}))
    with pytest.raises(ros_params.ConfigError, match="points_stride must be an integer"):
        ros_params.load_defaults(path)
    # an int where a float is declared is fine; node-specific sections override /**
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": dict(good, max_depth=80)},
                                    "perception_node": {"ros__parameters": {"overlay_alpha": 0.25}}}))
    loaded = ros_params.load_defaults(path)
    assert loaded["max_depth"] == 80.0 and isinstance(loaded["max_depth"], float)
    assert loaded["overlay_alpha"] == 0.25


def test_throttle_thread_safety_smoke():
    throttle = Throttle(1000.0)
    hits = []

    def hammer():
        for _ in range(1000):
            if throttle.ready("x"):
                hits.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(hits) == 1 and throttle.take_suppressed("x") == 3999
    assert time.monotonic() > 0


# ---------------------------------------------------------------- Fast DDS transport


def test_large_image_transport_only_when_the_user_chose_none():
    from mtan_ros.ros.transport import large_image_env

    chosen = large_image_env({})
    assert list(chosen) == ["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert chosen["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_shm.xml")
    for variable in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
        assert large_image_env({variable: "mine"}) == {}


def test_shipped_fastdds_profile_keeps_udp_and_enlarges_shared_memory():
    import xml.etree.ElementTree as ET

    from mtan_ros.ros.transport import profile_path

    ns = {"dds": "http://www.eprosima.com"}
    root = ET.parse(profile_path()).getroot()
    kinds = {d.findtext("dds:transport_id", namespaces=ns): d.findtext("dds:type", namespaces=ns)
             for d in root.iterfind(".//dds:transport_descriptor", ns)}
    assert sorted(kinds.values()) == ["SHM", "UDPv4"]
    segment = int(root.findtext(".//dds:transport_descriptor/dds:segment_size", namespaces=ns))
    assert segment >= 3 * 1024 * 2048 * 4  # several 2 Mpx float images in flight
    participant = root.find(".//dds:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", ns)]
    assert sorted(used) == sorted(kinds)


def test_set_nan_beyond_matches_mask_assignment():
    from mtan_ros.ros.perception_node import set_nan_beyond

    rng = np.random.default_rng(3)
    depth = (rng.random((40, 60)) * 150).astype(np.float32)
    depth[::7, ::5] = np.nan
    depth[1, 1], depth[2, 2] = np.inf, 100.0
    want = depth.copy()
    want[want > 100.0] = np.nan
    set_nan_beyond(depth, 100.0)
    np.testing.assert_array_equal(depth, want)  # NaN positions equal, values equal elsewhere
    assert depth[2, 2] == 100.0 and np.isnan(depth[1, 1])
