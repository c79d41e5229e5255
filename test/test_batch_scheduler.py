"""BatchScheduler: newest frame per camera, one frame per waiting camera per batch, fair order, no waiting
for a stopped camera, nothing lost but counted drops under concurrent producers, close wakes the worker.

Pure Python and threads; every wait has a deadline and none is a fixed sleep."""
from __future__ import annotations

import threading
import time

import pytest

from mtan_ros.errors import ConfigError
from mtan_ros.pipeline.batch_scheduler import BatchScheduler, CameraStats, UnknownCameraError

# Upper bound for what must happen "promptly"; generous for 2 shared cores, far below the timeouts used.
PROMPT_S = 5.0
LONG_TIMEOUT_S = 60.0


def _take_in_thread(scheduler, **kwargs):
    """Start a worker blocked in take_batch; returns (thread, result dict with batch and elapsed)."""
    result = {}
    started = threading.Event()

    def work():
        started.set()
        t0 = time.monotonic()
        result["batch"] = scheduler.take_batch(**kwargs)
        result["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert started.wait(PROMPT_S)
    return thread, result


def _wait_until_blocked(thread, scheduler):
    """Wait (with a deadline) until `thread` sits in take_batch's condition wait.

    Reads CPython's Condition._waiters: without it a put or close could land before the
    wait and the test would pass without exercising the wake-up.
    """
    deadline = time.monotonic() + PROMPT_S
    while time.monotonic() < deadline:
        with scheduler._cond:
            if scheduler._cond._waiters:
                return
        time.sleep(0.001)
    raise AssertionError("the worker never started waiting")


def test_newest_frame_wins_per_camera_and_replacements_count_as_dropped():
    s = BatchScheduler(["left", "right"])
    assert s.put("left", 1) is False
    assert s.put("left", 2) is True
    assert s.put("left", 3) is True
    assert s.put("right", "r1") is False
    assert dict(s.take_batch(timeout=0)) == {"left": 3, "right": "r1"}
    assert s.stats() == {"left": CameraStats(received=3, dropped=2, batched=1, waiting=0),
                         "right": CameraStats(received=1, dropped=0, batched=1, waiting=0)}
    assert s.put("left", 4) is False  # the slot was emptied by the batch: not a drop
    assert s.take_batch(timeout=0) == [("left", 4)]
    assert s.take_batch(timeout=0) == []


def test_a_batch_holds_one_frame_per_waiting_camera_and_only_those():
    s = BatchScheduler(["a", "b", "c", "d"])
    s.put("a", "a1")
    s.put("c", "c1")
    s.put("c", "c2")
    batch = s.take_batch(timeout=0)
    assert sorted(batch) == [("a", "a1"), ("c", "c2")]
    assert s.last_batch_size == 2 and s.batches == 1
    assert s.take_batch(timeout=0) == []
    assert s.last_batch_size == 2 and s.batches == 1  # an empty take is not a batch run


def test_none_is_a_frame_like_any_other():
    s = BatchScheduler(["a"])
    assert s.put("a", None) is False
    assert s.put("a", None) is True
    assert s.take_batch(timeout=0) == [("a", None)]


def test_max_batch_size_is_respected_and_zero_means_every_camera():
    s = BatchScheduler([f"cam{i}" for i in range(5)])
    for i in range(5):
        s.put(f"cam{i}", i)
    first = s.take_batch(max_batch_size=2, timeout=0)
    second = s.take_batch(max_batch_size=2, timeout=0)
    third = s.take_batch(max_batch_size=2, timeout=0)
    assert [len(first), len(second), len(third)] == [2, 2, 1]
    assert sorted(first + second + third) == [(f"cam{i}", i) for i in range(5)]
    for i in range(5):
        s.put(f"cam{i}", i)
    assert len(s.take_batch(max_batch_size=0, timeout=0)) == 5
    with pytest.raises(ConfigError, match="max_batch_size"):
        s.take_batch(max_batch_size=-1, timeout=0)


def test_three_busy_cameras_one_per_batch_are_served_round_robin_without_starvation():
    cameras = ["a", "b", "c"]
    s = BatchScheduler(cameras)
    served = []
    for n in range(300):
        for camera in cameras:  # always busy: every camera has a fresh frame before every batch
            s.put(camera, n)
        batch = s.take_batch(max_batch_size=1, timeout=0)
        assert len(batch) == 1 and batch[0][1] == n  # the newest frame, not a stale one
        served.append(batch[0][0])
    for i in range(len(served) - 2):
        assert set(served[i:i + 3]) == set(cameras), f"batches {i}..{i + 2}: {served[i:i + 3]}"
    stats = s.stats()
    assert [stats[c].batched for c in cameras] == [100, 100, 100]


def test_a_waiting_camera_is_served_within_ceil_cameras_over_batch_size_batches():
    """One camera puts a single frame while the others flood every batch; it still gets its turn in time."""
    cameras = [f"cam{i}" for i in range(7)]
    s = BatchScheduler(cameras)
    size = 3
    bound = -(-len(cameras) // size)
    for start in range(20):
        quiet = cameras[start % len(cameras)]
        s.put(quiet, "once")
        for turn in range(bound):
            for camera in cameras:
                if camera != quiet:
                    s.put(camera, "busy")
            if (quiet, "once") in s.take_batch(max_batch_size=size, timeout=0):
                break
        else:
            raise AssertionError(f"{quiet} waited more than {bound} batches (round {start})")


def test_a_stopped_camera_does_not_delay_the_others():
    s = BatchScheduler(["front", "rear", "dead"])
    s.put("dead", "last words")
    assert s.take_batch(timeout=0) == [("dead", "last words")]
    for n in range(3):
        s.put("front", n)
        s.put("rear", n)
        t0 = time.monotonic()
        batch = s.take_batch(max_batch_size=0, timeout=LONG_TIMEOUT_S)
        assert time.monotonic() - t0 < PROMPT_S
        assert sorted(batch) == [("front", n), ("rear", n)]


def test_a_waiting_worker_returns_on_the_first_frame_without_waiting_for_a_full_batch():
    s = BatchScheduler(["a", "b", "c"])
    thread, result = _take_in_thread(s, max_batch_size=3, timeout=LONG_TIMEOUT_S)
    _wait_until_blocked(thread, s)
    s.put("b", "b1")
    thread.join(PROMPT_S)
    assert not thread.is_alive()
    assert result["batch"] == [("b", "b1")] and result["elapsed"] < PROMPT_S


def test_take_batch_times_out_empty_when_no_camera_sends():
    s = BatchScheduler(["a"])
    t0 = time.monotonic()
    assert s.take_batch(timeout=0.05) == []
    assert time.monotonic() - t0 >= 0.05


def test_close_wakes_a_waiting_worker():
    s = BatchScheduler(["a", "b"])
    thread, result = _take_in_thread(s, timeout=LONG_TIMEOUT_S)
    _wait_until_blocked(thread, s)
    s.close()
    thread.join(PROMPT_S)
    assert not thread.is_alive()
    assert result["batch"] == [] and result["elapsed"] < PROMPT_S and s.closed
    t0 = time.monotonic()
    assert s.take_batch(timeout=LONG_TIMEOUT_S) == []  # closed: never blocks again
    assert time.monotonic() - t0 < PROMPT_S


def test_frames_put_before_close_are_still_handed_out():
    s = BatchScheduler(["a"])
    s.put("a", "final")
    s.close()
    assert s.take_batch(timeout=LONG_TIMEOUT_S) == [("a", "final")]


def test_concurrent_producers_lose_nothing_but_counted_drops():
    cameras = [f"cam{i}" for i in range(4)]
    per_camera = 3000
    s = BatchScheduler(cameras)
    producers_done = threading.Event()
    go = threading.Barrier(len(cameras) + 1)
    seen = {camera: [] for camera in cameras}
    bad_batches = []

    def produce(camera):
        go.wait(PROMPT_S)
        for n in range(per_camera):
            s.put(camera, n)

    def consume():
        go.wait(PROMPT_S)
        while not (producers_done.is_set() and not any(st.waiting for st in s.stats().values())):
            batch = s.take_batch(max_batch_size=2, timeout=0.01)
            if len(batch) > 2 or len({camera for camera, _ in batch}) != len(batch):
                bad_batches.append(batch)
            for camera, n in batch:
                seen[camera].append(n)

    threads = [threading.Thread(target=produce, args=(c,), daemon=True) for c in cameras]
    worker = threading.Thread(target=consume, daemon=True)
    for t in threads + [worker]:
        t.start()
    for t in threads:
        t.join(LONG_TIMEOUT_S)
        assert not t.is_alive()
    mid = s.stats()
    for camera in cameras:
        st = mid[camera]
        assert st.received == per_camera
        assert st.received == st.batched + st.dropped + st.waiting
    producers_done.set()
    worker.join(LONG_TIMEOUT_S)
    assert not worker.is_alive() and bad_batches == []
    final = s.stats()
    for camera in cameras:
        st, got = final[camera], seen[camera]
        assert st.waiting == 0 and st.batched == len(got) and st.batched + st.dropped == per_camera
        assert got == sorted(set(got))  # each frame at most once, never an older one after a newer one
        assert got[-1] == per_camera - 1  # the last frame is never dropped: nothing replaced it


def test_unknown_cameras_and_duplicate_names_are_clear_errors():
    s = BatchScheduler(["front"])
    with pytest.raises(UnknownCameraError, match=r"no camera named 'back' \(configured: 'front'\)"):
        s.put("back", 1)
    with pytest.raises(KeyError):
        s.remove_camera("back")
    with pytest.raises(ConfigError, match="listed twice"):
        s.add_camera("front")
    with pytest.raises(ConfigError, match="non-empty"):
        s.add_camera("")


def test_add_and_remove_cameras():
    s = BatchScheduler()
    assert s.take_batch(timeout=0) == []
    s.add_camera("a")
    s.put("a", 1)
    s.take_batch(timeout=0)
    s.add_camera("b")
    assert s.cameras == ["b", "a"]  # never served goes first
    s.put("a", 2)
    s.put("b", 3)
    assert s.take_batch(max_batch_size=1, timeout=0) == [("b", 3)]
    assert s.remove_camera("a") == CameraStats(received=2, dropped=1, batched=1, waiting=0)
    assert s.cameras == ["b"] and s.take_batch(timeout=0) == []
    with pytest.raises(UnknownCameraError):
        s.put("a", 4)
