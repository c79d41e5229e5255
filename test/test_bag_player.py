"""bag_player as a real process: what it says and how it exits for incomplete, damaged and unplayable bags.

No subscriber is needed (wait_timeout 0): these tests look at the player's own output and
exit code, not at delivery, which test_replay covers.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from ros_helpers import NodeProcess, RosSession  # noqa: E402

from mtan_ros.bags import messages as m  # noqa: E402
from mtan_ros.bags.make_bag import BagTopics, frame_arrays, open_writer, write_bag  # noqa: E402

SIZE = (64, 128)
START_NS = 1_650_000_000 * 10**9
PERIOD_NS = 100_000_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_bag_player") as session:
        yield session


@pytest.fixture(scope="module")
def topics(ros):
    return BagTopics.under(f"{ros.namespace}/camera")


@pytest.fixture(scope="module")
def dataset():
    from mtan_ros.data import open_dataset

    return open_dataset(None, split="val", format="synthetic", length=4, size=SIZE, seed=3)


def _frames_bag(out: Path, dataset, topics: BagTopics, last: tuple[str, ...]) -> Path:
    """Three full frames and a fourth with only the `last` kinds (info, image, depth, semantic)."""
    writer = open_writer(out)
    store = m.typestore()
    writer.open()
    kinds = {"info": (topics.camera_info, m.CAMERA_INFO_TYPE), "image": (topics.image, m.IMAGE_TYPE),
             "depth": (topics.depth_gt, m.IMAGE_TYPE), "semantic": (topics.semantic_gt, m.IMAGE_TYPE)}
    connections = {kind: writer.add_connection(topic, msgtype, typestore=store)
                   for kind, (topic, msgtype) in kinds.items()}
    for index in range(4):
        rgb, metres, labels = frame_arrays(dataset[index], dataset.depth_encoding)
        stamp = START_NS + index * PERIOD_NS
        cdr = {"info": m.camera_info_cdr(dataset.camera(index), stamp), "image": m.image_cdr(rgb, "rgb8", stamp),
               "depth": m.image_cdr(metres, "32FC1", stamp), "semantic": m.image_cdr(labels, "mono8", stamp)}
        for kind in (cdr if index < 3 else last):
            writer.write(connections[kind], stamp, cdr[kind])
    writer.close()
    return out


def _play(ros: RosSession, bag: Path, *extra: str, timeout: float = 60.0) -> tuple[int, str]:
    args = ["--ros-args", "-p", f"bag:={bag}", "-p", "rate:=0.0", "-p", "wait_timeout:=0.0",
            "-p", "start_delay:=0.0", *extra]
    with NodeProcess(ros, args, module="mtan_ros.ros.replay.bag_player") as player:
        code = player.wait_exit(timeout)
        return code, player.output()


def test_incomplete_last_frame_with_an_image_is_played_and_reported(ros, topics, dataset, tmp_path):
    bag = _frames_bag(tmp_path / "bag", dataset, topics, last=("info", "image"))
    code, output = _play(ros, bag)
    assert code == 0, output
    warning = [line for line in output.splitlines() if "the last frame (log time" in line]
    assert len(warning) == 1 and "WARN" in warning[0], output
    assert f"lacks {topics.depth_gt}, {topics.semantic_gt}, which every other frame has" in warning[0]
    assert "playing what it has" in warning[0]
    assert "played 4 frames (14 messages)" in output


def test_incomplete_last_frame_without_an_image_is_held_back(ros, topics, dataset, tmp_path):
    bag = _frames_bag(tmp_path / "bag", dataset, topics, last=("depth", "semantic"))
    code, output = _play(ros, bag)
    assert code == 0, output
    assert f"lacks {topics.camera_info}, {topics.image}, which every other frame has; not playing it" in output
    assert "played 3 frames (12 messages)" in output and "was not played" in output


def _mcap_chunks(path: Path) -> list[int]:
    from mcap.stream_reader import StreamReader

    offsets = []
    with open(path, "rb") as handle:
        handle.seek(8)
        offset = 8
        for record in StreamReader(handle, skip_magic=True, emit_chunks=True).records:
            if type(record).__name__ == "Chunk":
                offsets.append(offset)
            offset = handle.tell()
    return offsets


def _overwrite(path: Path, at: int, size: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    raw[at:at + size] = bytes((i * 37 + 11) % 256 for i in range(size))
    path.write_bytes(bytes(raw))


def test_damaged_bag_plays_every_intact_frame_then_names_the_damage(ros, topics, dataset, tmp_path):
    out = tmp_path / "bag"
    write_bag(dataset, out, start_ns=START_NS, topics=topics, progress=False, chunk_bytes=100_000)
    chunks = _mcap_chunks(out / "bag.mcap")
    assert len(chunks) == 2
    _overwrite(out / "bag.mcap", chunks[0] + 5000)
    code, output = _play(ros, out)
    assert code == 2, output
    assert "played 2 frames (8 messages)" in output
    named = [line for line in output.splitlines() if "damaged: bag.mcap:" in line]
    assert len(named) == 1 and "ERROR" in named[0], output
    assert f"chunk at byte {chunks[0]} fails its CRC check (8 messages lost on" in named[0]
    assert "is damaged in 1 place (listed above); every intact frame was played" in output


def test_bag_without_a_playable_frame_stops_at_once(ros, topics, dataset, tmp_path):
    """No intact image: exit 2 with one line before waiting for peers (here up to 300 s for a subscriber)."""
    out = tmp_path / "bag"
    write_bag(dataset, out, start_ns=START_NS, topics=topics, progress=False, limit=1)
    _overwrite(out / "bag.mcap", _mcap_chunks(out / "bag.mcap")[0] + 5000)
    code, output = _play(ros, out, "-p", "wait_timeout:=300.0", "-p", f"wait_for_subscribers:=['{topics.image}']")
    assert code == 2, output
    errors = [line for line in output.splitlines() if "no playable frame" in line]
    assert len(errors) == 1 and "ERROR" in errors[0], output
    assert f"no message on {topics.image} can be read; bag.mcap: chunk at byte" in errors[0]
    assert "playing" not in output.replace("no playable", "")
