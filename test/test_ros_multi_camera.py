"""Several camera processes, one perception node: each camera's outputs over real DDS, counted frame by frame.

Each camera is `mtan_ros.ros.replay.synthetic_camera` in its own process with ROS 2 defaults
and no Fast DDS profile, as drivers start; one is read through a remap, as a real driver's
topic would be; one stops early. Frame i of a camera carries stamp base + i / rate with
its own base and frame_id, so every answer is traced to exactly one camera frame. Counts,
never timings.
"""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")
pytest.importorskip("torch", reason="needs torch for the Predictor")

from ros_helpers import DiagnosticsWatch, NodeProcess, RosSession, stamp_key  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mtan_ros.benchmarks.cameras import sent_stamps  # noqa: E402
from mtan_ros.ros.camera.qos import image_output_qos_for_subscribers  # noqa: E402

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

RATE = 5.0
NO_PROFILE = {"FASTDDS_DEFAULT_PROFILES_FILE": None, "FASTDDS_BUILTIN_TRANSPORTS": None}
# name -> (height, width, frame_id, stamp base, frames); rear stops after half the others' frames.
CAMERAS = {
    "front": (240, 320, "front_optical", 1000.0, 60),
    "rear": (120, 160, "rear_optical", 2000.0, 30),
    "side": (128, 256, "side_optical", 3000.0, 60),
}


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_multi_camera") as session:
        yield session


class Answers:
    """Every depth image of one camera, as (stamp, frame_id, height, width), seen by a default subscriber."""

    def __init__(self, ros: RosSession, topic: str) -> None:
        self.seen: list[tuple] = []
        self.sub = ros.node.create_subscription(Image, topic, self._on_depth, image_output_qos_for_subscribers())

    def _on_depth(self, msg: Image) -> None:
        self.seen.append((stamp_key(msg.header.stamp), msg.header.frame_id, msg.height, msg.width))


def test_three_camera_processes_are_each_answered_on_their_own_topics(ros, tiny_checkpoint):
    side_driver = f"{ros.namespace}_drivers/side_cam"
    args = ["--ros-args", "-p", f"model_path:={tiny_checkpoint}", "-p", "device:=cpu", "-p", "precision:=fp32",
            "-p", "cameras:=[front, rear, side]", "-p", "publish_overlay:=false",
            "-p", "publish_semantic_color:=false",
            "-r", f"side/image_raw:={side_driver}/image_raw", "-r", f"side/camera_info:={side_driver}/camera_info"]
    answers, watches, cameras = {}, {}, []
    with NodeProcess(ros, args) as node:
        node.wait_until_state("active")
        for name in CAMERAS:
            answers[name] = Answers(ros, node.topic(f"{name}/depth"))
            watches[name] = DiagnosticsWatch(ros, node.fqn, name)
        ros.wait_for(lambda: all(a.sub.get_publisher_count() for a in answers.values()), 60, "the depth outputs")
        try:
            for name, (height, width, frame_id, base, frames) in CAMERAS.items():
                namespace = side_driver if name == "side" else node.topic(name)
                cameras.append(NodeProcess(ros, [
                    "--ros-args", "-p", f"width:={width}", "-p", f"height:={height}", "-p", f"rate:={RATE}",
                    "-p", f"frames:={frames}", "-p", f"stamp_base:={base}", "-p", f"frame_id:={frame_id}"],
                    module="mtan_ros.ros.replay.synthetic_camera", namespace=namespace, extra_env=NO_PROFILE).start())
            ros.wait_for(lambda: not any(cam.alive() for cam in cameras), 180, "the cameras to finish")
            assert [cam.wait_exit() for cam in cameras] == [0, 0, 0], [cam.output() for cam in cameras]

            def settled(values: dict, answered: list) -> bool:
                """All frames the node received are accounted for, and all it answered reached us."""
                done = sum(int(values.get(key, 0)) for key in (
                    "frames_processed", "frames_dropped", "frames_rejected", "frames_skipped_no_subscriber"))
                return int(values.get("frames_received", -1)) == done and len(answered) >= int(
                    values.get("frames_processed", 0))

            ros.wait_for(lambda: all(settled(watches[n].values, answers[n].seen) for n in CAMERAS), 60,
                         "every camera's last answers")
        finally:
            for cam in cameras:
                cam.kill()
        values = {name: dict(watch.values) for name, watch in watches.items()}
        assert node.alive(), node.output()

    for name, (height, width, frame_id, base, frames) in CAMERAS.items():
        sent = sent_stamps(base, frames, RATE)
        seen = answers[name].seen
        # Only this camera's frames, with its header and size, on its topic.
        assert {(f, h, w) for _, f, h, w in seen} == {(frame_id, height, width)}, (name, seen[:3])
        assert {stamp for stamp, *_ in seen} <= set(sent), name
        answered = {stamp for stamp, *_ in seen}
        first = next(i for i, stamp in enumerate(sent) if stamp in answered)
        after_match = frames - first
        print(f"\n{name}: {len(answered)} of {frames} answered, the first #{first}; node: {values[name]}")
        assert after_match >= 10, f"{name} matched too late: frame #{first} of {frames}"
        assert len(answered) >= 0.8 * after_match, (name, len(answered), after_match, values[name])
        assert values[name]["camera"] == name and values[name]["frames_rejected"] == "0"
        assert int(values[name]["batches"]) >= 1 and int(values[name]["max_batch_size"]) == 3
    assert values["side"]["input_topic"] == f"{side_driver}/image_raw"
    # rear stopped halfway: the others kept being answered to their last frames.
    for name in ("front", "side"):
        _, _, _, base, frames = CAMERAS[name]
        late = sent_stamps(base, frames, RATE)[CAMERAS["rear"][4] + 10:]
        assert sum(stamp in {s for s, *_ in answers[name].seen} for stamp in late) >= 0.8 * len(late), name
