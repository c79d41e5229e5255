"""mtan-make-bag and the bag reader: round trips in both storages, damaged bags, the CLI.

Small synthetic scenes (64x128, a few frames) keep every test well under a second or two.
"""
from __future__ import annotations

import json
import os
import signal
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtan_ros.bags import messages as m
from mtan_ros.bags.make_bag import frame_arrays, main, write_bag
from mtan_ros.bags.reader import BagCorruptError, BagReadError, open_bag, read_all

SIZE = (64, 128)
RATE = 10.0
START_NS = 1_700_000_000_123_000_000
TOPICS = [m.CAMERA_INFO_TOPIC, m.IMAGE_TOPIC, m.DEPTH_GT_TOPIC, m.SEMANTIC_GT_TOPIC]


@pytest.fixture(scope="module")
def dataset():
    from mtan_ros.data import open_dataset

    return open_dataset(None, split="val", format="synthetic", length=3, size=SIZE, seed=5)


@pytest.fixture(scope="module")
def sources(dataset):
    """(rgb uint8, metres with NaN, labels uint8 255 = void, camera) of each frame."""
    return [(*frame_arrays(dataset[i], dataset.depth_encoding), dataset.camera(i)) for i in range(len(dataset))]


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"bag_{request.param}") / "bag"
    summary = write_bag(dataset, out, storage=request.param, rate=RATE, start_ns=START_NS, progress=False)
    assert (summary.frames, summary.messages, summary.storage) == (3, 12, request.param)
    return out


def _rclpy_types():
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    return deserialize_message, {m.IMAGE_TYPE: Image, m.CAMERA_INFO_TYPE: CameraInfo}


def _image_array(msg) -> np.ndarray:
    """rclpy or rosbags Image -> array (no padding in our bags; checks that too)."""
    dtype, channels = {"rgb8": (np.uint8, 3), "mono8": (np.uint8, 1), "32FC1": (np.float32, 1)}[msg.encoding]
    assert not msg.is_bigendian
    assert msg.step == msg.width * channels * np.dtype(dtype).itemsize
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), dtype)
    return data.reshape((msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels))


def _check_frame(get, frame_index, sources, stamp_ns):
    """`get(topic)` gives the deserialised message of this frame; compare with the source arrays."""
    rgb, metres, labels, camera = sources[frame_index]
    image, depth, semantic, info = (get(t) for t in (m.IMAGE_TOPIC, m.DEPTH_GT_TOPIC, m.SEMANTIC_GT_TOPIC,
                                                     m.CAMERA_INFO_TOPIC))
    for msg in (image, depth, semantic, info):
        assert msg.header.frame_id == m.FRAME_ID
        assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp_ns
    assert (image.encoding, depth.encoding, semantic.encoding) == ("rgb8", "32FC1", "mono8")
    np.testing.assert_array_equal(_image_array(image), rgb)
    np.testing.assert_array_equal(_image_array(semantic), labels)
    got_depth = _image_array(depth)
    np.testing.assert_array_equal(np.isnan(got_depth), np.isnan(metres))
    np.testing.assert_array_equal(got_depth[~np.isnan(got_depth)], metres[~np.isnan(metres)])
    # camera_info describes exactly the image it comes with.
    assert (info.height, info.width) == (image.height, image.width) == SIZE
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), camera.K)
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4)[:, :3], camera.K)
    assert info.distortion_model == "plumb_bob"


def test_round_trip_with_rclpy(bag, sources):
    """Every message deserialises with rclpy; fields equal the source; stamps increase at the rate."""
    deserialize_message, classes = _rclpy_types()
    msgs = read_all(bag)
    assert [x.topic for x in msgs] == TOPICS * 3
    for i in range(3):
        frame = msgs[4 * i:4 * i + 4]
        stamp = START_NS + round(i * 1e9 / RATE)
        assert {x.log_time_ns for x in frame} == {stamp}
        decoded = {x.topic: deserialize_message(x.data, classes[x.msgtype]) for x in frame}
        _check_frame(decoded.__getitem__, i, sources, stamp)
    image_stamps = [m.header_stamp_ns(x.data) for x in msgs if x.topic == m.IMAGE_TOPIC]
    assert np.all(np.diff(image_stamps) == round(1e9 / RATE))


def test_round_trip_with_rosbags(bag, sources):
    """The rosbags library (an independent reader) opens the bag and decodes the same frames."""
    from rosbags.highlevel import AnyReader

    with AnyReader([bag], default_typestore=m.typestore()) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            m.CAMERA_INFO_TOPIC: m.CAMERA_INFO_TYPE, m.IMAGE_TOPIC: m.IMAGE_TYPE,
            m.DEPTH_GT_TOPIC: m.IMAGE_TYPE, m.SEMANTIC_GT_TOPIC: m.IMAGE_TYPE}
        frames: dict[int, dict] = {}
        for connection, timestamp, raw in reader.messages():
            frames.setdefault(timestamp, {})[connection.topic] = reader.deserialize(raw, connection.msgtype)
    assert len(frames) == 3
    for i, stamp in enumerate(sorted(frames)):
        assert stamp == START_NS + round(i * 1e9 / RATE)
        _check_frame(frames[stamp].__getitem__, i, sources, stamp)


def test_mcap_readers_decode_the_bag(dataset, tmp_path, sources):
    """The mcap library with its ROS 2 decoder reads our mcap bags too."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = tmp_path / "bag"
    write_bag(dataset, out, storage="mcap", rate=RATE, start_ns=START_NS, progress=False)
    with open(out / "bag.mcap", "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        decoded = list(reader.iter_decoded_messages())
        summary = reader.get_summary()
    assert len(decoded) == 12 and summary.statistics.message_count == 12
    images = [msg for _, channel, _, msg in decoded if channel.topic == m.IMAGE_TOPIC]
    assert [(img.height, img.width, img.encoding) for img in images] == [(*SIZE, "rgb8")] * 3
    np.testing.assert_array_equal(np.frombuffer(bytes(images[1].data), np.uint8).reshape(*SIZE, 3), sources[1][0])


def test_bag_metadata_describes_the_frames(bag, dataset):
    opened = open_bag(bag)
    assert opened.has_metadata and opened.message_count == 12
    assert {t: info.count for t, info in opened.topics.items()} == dict.fromkeys(TOPICS, 3)
    info = json.loads(opened.custom_data["mtan_ros"])
    assert info["frames"] == 3 and info["rate_hz"] == RATE and info["image_size"] == list(SIZE)
    assert info["class_names"] == list(dataset.classes.names) and info["num_classes"] == 7


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_image_topic(dataset, sources, tmp_path, fmt):
    out = tmp_path / "bag"
    write_bag(dataset, out, compressed=fmt, progress=False, limit=2, start_ns=START_NS)
    msgs = read_all(out)
    assert [x.topic for x in msgs[:4]] == [m.CAMERA_INFO_TOPIC, m.COMPRESSED_TOPIC, m.DEPTH_GT_TOPIC,
                                           m.SEMANTIC_GT_TOPIC]
    decoded = m.decode_image(msgs[1].data, m.COMPRESSED_TYPE)
    assert decoded.stamp_ns == START_NS and decoded.pixels.shape == (*SIZE, 3)
    error = np.abs(decoded.pixels.astype(int) - sources[0][0].astype(int))
    if fmt == "png":
        assert error.max() == 0
    else:
        assert error.mean() < 4  # JPEG quality 95
    msg = m.deserialize(msgs[1].data, m.COMPRESSED_TYPE)
    assert msg.format == f"rgb8; {fmt} compressed bgr8"


def test_npy_depth_is_converted_to_metres(tmp_path):
    """The preprocessed release stores inverse depth; the bag carries metres through its DepthEncoding."""
    from mtan_ros.data import open_dataset, write_preprocessed_tree
    from mtan_ros.depth_encoding import CITYSCAPES_INVERSE

    tree = write_preprocessed_tree(tmp_path / "npy", n_train=0, n_val=2, size=SIZE, seed=1)
    assert main(["--data", str(tree), "--out", str(tmp_path / "bag"), "--no-progress", "--start-time", "100"]) == 0
    stored = np.load(tree / "val" / "depth" / "1.npy")[..., 0]
    depth = m.decode_image(read_all(tmp_path / "bag")[6].data).pixels
    expected = CITYSCAPES_INVERSE.to_metres(stored)
    np.testing.assert_array_equal(np.isnan(depth), stored == 0)
    np.testing.assert_allclose(depth[stored > 0], expected[stored > 0], rtol=1e-6)
    dataset = open_dataset(tree, split="val", format="npy")
    labels = m.decode_image(read_all(tmp_path / "bag")[7].data).pixels
    np.testing.assert_array_equal(labels, m.labels_to_mono8(dataset[1]["semantic"].numpy()))


def test_raw_frames_use_their_own_camera_json(tmp_path):
    """camera_info of raw Cityscapes comes from each frame's camera json, scaled to the stored size."""
    from mtan_ros.data import CityscapesCamera, write_raw_tree

    tree = write_raw_tree(tmp_path / "raw", n_train=0, n_val=2, size=SIZE, seed=2)
    jsons = sorted((tree / "camera" / "val").rglob("*_camera.json"))
    data = json.loads(jsons[1].read_text())
    data["intrinsic"]["fx"] *= 1.01  # one frame with its own focal length, as Cityscapes cities differ
    jsons[1].write_text(json.dumps(data))
    assert main(["--data", str(tree), "--format", "raw", "--size", *map(str, SIZE), "--out",
                 str(tmp_path / "bag"), "--storage", "sqlite3", "--no-progress"]) == 0
    infos = [m.deserialize(x.data, x.msgtype) for x in read_all(tmp_path / "bag") if x.topic == m.CAMERA_INFO_TOPIC]
    for info, path in zip(infos, jsons):
        camera = CityscapesCamera.from_json(path).scaled(*SIZE)
        np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), camera.K)
        assert (info.height, info.width) == SIZE
    assert infos[1].k[0] == pytest.approx(infos[0].k[0] * 1.01)


# ------------------------------------------------------------------------------------ damage

def _cut_copy(bag: Path, dest: Path, keep: int, tail: bytes = b"", with_metadata: bool = False) -> Path:
    dest.mkdir()
    storage = open_bag(bag).files[0]
    (dest / storage.name).write_bytes(storage.read_bytes()[:keep] + tail)
    if with_metadata:
        shutil.copy(bag / "metadata.yaml", dest / "metadata.yaml")
    return dest


def test_truncated_bag_gives_every_good_message_then_a_clear_error(bag, tmp_path):
    full = read_all(bag)
    size = open_bag(bag).files[0].stat().st_size
    recovered = []
    for n, fraction in enumerate((0.002, 0.2, 0.45, 0.7, 0.95)):
        cut = _cut_copy(bag, tmp_path / f"cut{n}", int(size * fraction), with_metadata=(n % 2 == 0))
        got = []
        with pytest.raises(BagCorruptError) as caught:
            for msg in open_bag(cut).messages():
                got.append(msg)
        assert got == full[:len(got)], "a damaged bag must only ever hand out intact messages"
        assert caught.value.messages_read == len(got)
        assert caught.value.last_good_ns == (got[-1].log_time_ns if got else None)
        text = str(caught.value)
        assert "damaged" in text and f"Read {len(got)} good message" in text and "re-create" in text
        recovered.append(len(got))
    assert recovered == sorted(recovered) and recovered[0] < len(full)
    assert recovered[-1] >= len(full) - 2, "a bag cut at 95% keeps nearly all of its frames"


def test_mcap_cut_after_the_data_keeps_every_message(bag, tmp_path):
    """A recording killed before writing its summary (no footer, no metadata.yaml) loses nothing."""
    if open_bag(bag).storage != "mcap":
        pytest.skip("mcap layout")
    raw = open_bag(bag).files[0].read_bytes()
    data_end = raw.rfind(b"\x0f" + (4).to_bytes(8, "little"))  # the DataEnd record
    cut = _cut_copy(bag, tmp_path / "cut", data_end)
    got = []
    with pytest.raises(BagCorruptError, match="without a footer"):
        for msg in open_bag(cut).messages():
            got.append(msg)
    assert got == read_all(bag)
    assert {t: i.count for t, i in open_bag(cut).topics.items()} == dict.fromkeys(TOPICS, 3)


def test_corrupt_bytes_stop_the_reader(bag, tmp_path):
    full = read_all(bag)
    size = open_bag(bag).files[0].stat().st_size
    garbage = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    cut = _cut_copy(bag, tmp_path / "bad", size // 2, tail=garbage, with_metadata=True)
    got = []
    with pytest.raises(BagCorruptError):
        for msg in open_bag(cut).messages():
            got.append(msg)
    assert got == full[:len(got)]


# Six frames of ~66 kB in chunks closed after 100 kB: three chunks of two frames (eight messages) each.
CHUNKED = 100_000


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """(bag folder, its messages, [(byte offset, Chunk record)] of its three chunks), mcap."""
    from mcap.stream_reader import StreamReader

    from mtan_ros.data import open_dataset

    dataset = open_dataset(None, split="val", format="synthetic", length=6, size=SIZE, seed=7)
    out = tmp_path_factory.mktemp("chunked") / "bag"
    write_bag(dataset, out, rate=RATE, start_ns=START_NS, progress=False, chunk_bytes=CHUNKED)
    chunks = []
    with open(out / "bag.mcap", "rb") as handle:
        handle.seek(8)
        offset = 8
        for record in StreamReader(handle, skip_magic=True, emit_chunks=True).records:
            if type(record).__name__ == "Chunk":
                chunks.append((offset, record))
            offset = handle.tell()
    assert len(chunks) == 3
    return out, read_all(out), chunks


def _damaged_copy(bag: Path, dest: Path, at: int, size: int = 64, keep: "int | None" = None,
                  with_metadata: bool = True) -> Path:
    """A copy of `bag` with `size` bytes at `at` overwritten (and cut after `keep` bytes)."""
    dest.mkdir()
    storage = open_bag(bag).files[0]
    raw = bytearray(storage.read_bytes())
    raw[at:at + size] = bytes((i * 37 + 11) % 256 for i in range(size))
    (dest / storage.name).write_bytes(bytes(raw[:keep]))
    if with_metadata:
        shutil.copy(bag / "metadata.yaml", dest / "metadata.yaml")
    return dest


def _read_damaged(bag: Path):
    """(messages delivered, damage list, error) of a bag that must be reported as damaged."""
    opened = open_bag(bag)
    got = []
    with pytest.raises(BagCorruptError) as caught:
        for msg in opened.messages():
            got.append(msg)
    assert caught.value.messages_read == len(got) and opened.damage
    return got, opened.damage, caught.value


def _frames(msgs) -> list[int]:
    return sorted({x.log_time_ns for x in msgs})


def test_mcap_chunks_carry_crcs_and_whole_frames(chunked):
    import zlib

    bag, full, chunks = chunked
    times = []
    for _, chunk in chunks:
        assert chunk.uncompressed_crc != 0 and chunk.uncompressed_crc == zlib.crc32(chunk.data)
        times.append((chunk.message_start_time, chunk.message_end_time))
    frames = _frames(full)
    assert times == [(frames[0], frames[1]), (frames[2], frames[3]), (frames[4], frames[5])]
    # Schemas and channels also stand before the first chunk: losing it loses no channel.
    raw = (bag / "bag.mcap").read_bytes()[:chunks[0][0]]
    assert all(topic.encode() in raw for topic in TOPICS)


def test_overwritten_bytes_in_an_mcap_chunk_are_named_and_the_next_chunk_is_read(chunked, tmp_path):
    bag, full, chunks = chunked
    (offset, _), (next_offset, _) = chunks[1], chunks[2]
    middle = offset + (next_offset - offset) // 2
    got, damage, error = _read_damaged(_damaged_copy(bag, tmp_path / "bad", middle))
    frames = _frames(full)
    assert got == full[:8] + full[16:], "only the damaged chunk is lost, nothing altered is delivered"
    assert len(damage) == 1
    place = damage[0]
    assert (place.where, place.offset, place.messages) == (f"chunk at byte {offset}", offset, 8)
    assert "CRC" in place.problem and sorted(place.topics) == sorted(TOPICS)
    assert (place.first_ns, place.last_ns) == (frames[2], frames[3])
    text = str(error)
    assert f"chunk at byte {offset} fails its CRC check (8 messages lost" in text and "Read 16 good messages" in text


@pytest.mark.parametrize("with_footer", [True, False])
def test_a_damaged_message_header_in_chunk_1_keeps_chunk_2(chunked, tmp_path, with_footer):
    """The first message record of chunk 1 is garbled; without a footer the channels still come from the file."""
    bag, full, chunks = chunked
    offset, chunk = chunks[0]
    raw = (bag / "bag.mcap").read_bytes()
    pos = 0
    while chunk.data[pos] != 0x05:  # schema and channel records come first
        pos += 9 + int.from_bytes(chunk.data[pos + 1:pos + 9], "little")
    first_message = offset + 49 + pos  # the chunk's records start after its 49-byte header (no compression)
    assert raw[first_message:first_message + 9] == chunk.data[pos:pos + 9]
    data_end = raw.rfind(b"\x0f" + (4).to_bytes(8, "little"))
    got, damage, _ = _read_damaged(_damaged_copy(bag, tmp_path / "bad", first_message, 16,
                                                 keep=None if with_footer else data_end,
                                                 with_metadata=with_footer))
    assert got == full[8:]
    assert damage[0].where == f"chunk at byte {offset}" and damage[0].messages == 8
    if not with_footer:
        assert "without a footer" in damage[1].problem and len(damage) == 2


def test_a_damaged_chunk_header_is_skipped_to_the_next_chunk(chunked, tmp_path):
    bag, full, chunks = chunked
    (offset, _), (next_offset, _) = chunks[1], chunks[2]
    got, damage, _ = _read_damaged(_damaged_copy(bag, tmp_path / "bad", offset, 12))
    assert got == full[:8] + full[16:]
    place = damage[0]
    assert place.where == f"bytes {offset}-{next_offset}" and f"skipped to byte {next_offset}" in place.problem
    assert place.messages == 8 and sorted(place.topics) == sorted(TOPICS)  # from the summary's index


def test_channels_come_from_the_summary_when_the_first_chunk_is_lost(tmp_path, sources):
    """Other mcap writers (ros2 bag record) describe channels only in the first chunk; its loss costs no more."""
    from mcap.writer import CompressionType, Writer

    path = tmp_path / "other.mcap"
    with open(path, "wb") as handle:
        writer = Writer(handle, chunk_size=10_000, compression=CompressionType.NONE)
        writer.start(profile="ros2")
        schema = writer.register_schema(m.IMAGE_TYPE, "ros2msg", b"")
        channel = writer.register_channel(m.IMAGE_TOPIC, "cdr", schema)
        for i in range(3):
            stamp = START_NS + i
            writer.add_message(channel, stamp, m.image_cdr(sources[i][0], "rgb8", stamp), stamp)
        writer.finish()
    first_chunk = path.read_bytes().index(b"\x06", 8 + 9)  # header record, then the first chunk
    raw = bytearray(path.read_bytes())
    raw[first_chunk + 5000:first_chunk + 5064] = bytes(64)
    path.write_bytes(bytes(raw))
    got, damage, _ = _read_damaged(path)
    assert [(x.topic, x.msgtype, x.log_time_ns) for x in got] == [(m.IMAGE_TOPIC, m.IMAGE_TYPE, START_NS + i)
                                                                  for i in (1, 2)]
    assert damage[0].where == f"chunk at byte {first_chunk}" and damage[0].messages == 1


def test_bags_without_crcs_are_read_and_broken_records_named(tmp_path, dataset):
    """rosbags writes CRC 0: such bags are read; damage shows only where a record does not parse."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = tmp_path / "plain"
    with Writer(out, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(m.IMAGE_TOPIC, m.IMAGE_TYPE, typestore=m.typestore())
        for i in range(3):
            rgb = frame_arrays(dataset[i], dataset.depth_encoding)[0]
            writer.write(connection, START_NS + i, m.image_cdr(rgb, "rgb8", START_NS + i))
    full = read_all(out)
    assert [x.log_time_ns for x in full] == [START_NS + i for i in range(3)]
    raw = (out / "plain.mcap").read_bytes()
    second = raw.index(b"\x05", raw.index(full[1].data) - 40)  # the second message record's opcode
    assert raw[second + 9 + 22:second + 9 + 22 + 16] == full[1].data[:16]
    got, damage, _ = _read_damaged(_damaged_copy(out, tmp_path / "bad", second + 1, 8))
    assert got == full[:1] and len(damage) == 1
    assert "the chunk has no CRC" in damage[0].problem and damage[0].messages == 2


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("mode", ["FILE", "MESSAGE"])
def test_zstd_compressed_bags_are_read(tmp_path, dataset, storage, mode):
    from rosbags.rosbag2 import CompressionFormat, CompressionMode

    from mtan_ros.bags.make_bag import open_writer

    writer = open_writer(tmp_path / "bag", storage)
    writer.set_compression(CompressionMode[mode], CompressionFormat.ZSTD)
    writer.open()
    connection = writer.add_connection(m.IMAGE_TOPIC, m.IMAGE_TYPE, typestore=m.typestore())
    images = [m.image_cdr(frame_arrays(dataset[i], dataset.depth_encoding)[0], "rgb8", START_NS + i)
              for i in range(3)]
    for i, cdr in enumerate(images):
        writer.write(connection, START_NS + i, cdr)
    writer.close()
    assert open_bag(tmp_path / "bag").files[0].name.endswith(".zstd") == (mode == "FILE")
    assert [x.data for x in read_all(tmp_path / "bag")] == images


def test_sqlite_rows_whose_message_does_not_parse_are_named(tmp_path, dataset):
    """sqlite3 has no checksum: damage shows where it breaks a message's own structure."""
    write_bag(dataset, tmp_path / "bag", storage="sqlite3", rate=RATE, start_ns=START_NS, progress=False)
    full = read_all(tmp_path / "bag")
    raw = (tmp_path / "bag" / "bag.db3").read_bytes()
    second_depth = raw.index(b"32FC1", raw.index(b"32FC1") + 1)
    got, damage, _ = _read_damaged(_damaged_copy(tmp_path / "bag", tmp_path / "bad", second_depth - 40))
    assert got == [x for x in full if not (x.topic == m.DEPTH_GT_TOPIC and x.log_time_ns == full[4].log_time_ns)]
    assert len(damage) == 1 and damage[0].where == "row 7" and "does not parse" in damage[0].problem
    assert (damage[0].messages, damage[0].topics, damage[0].first_ns) == (1, [m.DEPTH_GT_TOPIC], full[4].log_time_ns)


def test_sqlite_damage_inside_pixels_goes_unnoticed(tmp_path, dataset):
    """The documented limit: overwritten pixel bytes of an sqlite3 row parse, so they are delivered as they are."""
    write_bag(dataset, tmp_path / "bag", storage="sqlite3", rate=RATE, start_ns=START_NS, progress=False)
    full = read_all(tmp_path / "bag")
    raw = (tmp_path / "bag" / "bag.db3").read_bytes()
    inside_image = raw.index(b"rgb8", raw.index(b"rgb8") + 1) + 10_000
    got = read_all(_damaged_copy(tmp_path / "bag", tmp_path / "bad", inside_image))
    assert len(got) == len(full) and sum(a != b for a, b in zip(got, full)) == 1


def test_cut_sqlite_bag_counts_the_lost_rows(bag, tmp_path):
    if open_bag(bag).storage != "sqlite3":
        pytest.skip("sqlite3 layout")
    size = open_bag(bag).files[0].stat().st_size
    got, damage, _ = _read_damaged(_cut_copy(bag, tmp_path / "cut", int(size * 0.6), with_metadata=True))
    assert len(got) + sum(d.messages for d in damage) == 12
    assert damage[-1].where.startswith("row") and damage[-1].where.endswith("12")


def test_interrupted_writer_keeps_a_complete_bag(dataset, tmp_path):
    """Ctrl-C while writing: the frame in progress is finished, the bag is closed and fully readable."""

    class Interrupting:
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, index):
            if index == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return self.base[index]

        def __getattr__(self, name):
            return getattr(self.base, name)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the test run itself was started in the background
    summary = write_bag(Interrupting(dataset), tmp_path / "bag", progress=False, storage="sqlite3")
    assert summary.interrupted and summary.frames == 2
    opened = open_bag(tmp_path / "bag")
    assert opened.message_count == 8 and len(read_all(tmp_path / "bag")) == 8
    assert signal.getsignal(signal.SIGINT) is before


def test_reader_errors_say_what_to_do(tmp_path):
    with pytest.raises(BagReadError, match="not found.*metadata.yaml"):
        open_bag(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(BagReadError, match="not a rosbag2 folder"):
        open_bag(tmp_path / "empty")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "fake.mcap").write_bytes(b"hello world, not an mcap")
    with pytest.raises(BagReadError, match="not an mcap file"):
        read_all(tmp_path / "fake")


def test_cli(tmp_path, capsys):
    out = tmp_path / "bag"
    args = ["--format", "synthetic", "--count", "2", "--size", *map(str, SIZE), "--out", str(out), "--no-progress",
            "--rate", "5", "--storage", "sqlite3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 frames" in printed and f"{SIZE[0]}x{SIZE[1]})" in printed  # H x W, as in the README
    stamps = [x.log_time_ns for x in read_all(out) if x.topic == m.IMAGE_TOPIC]
    assert stamps[1] - stamps[0] == 200_000_000
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--limit", "1"]) == 0
    assert len(read_all(out)) == 4
    assert main(["--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
