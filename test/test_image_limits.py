"""Frame limits: size checks and their kinds, short quotes of sender text, memory handed back after big frames."""
from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import image_corpus as corpus
import pytest

from mtan_ros.errors import ImageConversionError
from mtan_ros.imaging import limits as image_limits
from mtan_ros.imaging.limits import DEFAULT_MAX_PIXELS, REFUSAL_KINDS, check_frame_size, quote

PACKAGE_DIR = Path(image_limits.__file__).parents[1]


def size_refusal(width: int, height: int, **kw) -> ImageConversionError:
    with pytest.raises(ImageConversionError) as info:
        check_frame_size(width, height, **kw)
    return info.value


def test_sizes_and_their_kinds():
    check_frame_size(4096, 3072)
    check_frame_size(640, 480, expected_size=(480, 640))
    assert size_refusal(0, 10).kind == "size.zero"
    assert size_refusal(10, 0, expected_size=(5, 5)).kind == "size.zero"
    err = size_refusal(4097, 3072)
    assert err.kind == "size.too_large" and "4097x3072 = 12.6 Mpx" in str(err) and "12.6 Mpx limit" in str(err)
    assert size_refusal(11, 10, max_pixels=100).kind == "size.too_large"
    err = size_refusal(640, 480, expected_size=(720, 1280))
    assert err.kind == "size.unexpected" and "640x480" in str(err) and "1280x720" in str(err)
    assert DEFAULT_MAX_PIXELS == 12_582_912


@pytest.mark.parametrize("text", ["rgb8", "", "x" * 64, "a'b\"c"])
def test_short_text_is_quoted_whole(text):
    assert quote(text) == repr(text)


@pytest.mark.parametrize("text", ["e" * 100_000, "\x00" * 1000, "\u00e9" * 70])
def test_long_text_is_cut(text):
    shown = quote(text)
    assert len(shown) <= 64 + 25 and shown.endswith(f"... ({len(text)} characters)")
    assert shown.startswith(repr(text[:10])[:10])


def test_every_kind_raised_is_documented():
    """Throttling is per kind: each kind in the converters' source must be one REFUSAL_KINDS explains."""
    used = set()
    for name in ("imaging/image_encodings.py", "imaging/limits.py", "imaging/compressed.py",
                 "ros/camera/image_messages.py"):
        source = (PACKAGE_DIR / name).read_text()
        used |= set(re.findall(r'kind="([a-z0-9_.]+)"', source))
        used |= set(re.findall(r'"((?:encoding|size|layout|compressed|jpeg|png)\.[a-z0-9_]+)"\)?$', source, re.M))
    assert used == set(REFUSAL_KINDS), used ^ set(REFUSAL_KINDS)
    assert all(kind.count(".") == 1 for kind in REFUSAL_KINDS)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_release_freed_memory_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert image_limits.release_freed_memory() is True


def test_release_freed_memory_elsewhere_is_a_no_op(monkeypatch):
    monkeypatch.setattr(image_limits, "_MALLOC_TRIM_LOOKED_UP", False)
    monkeypatch.setattr(image_limits, "_MALLOC_TRIM", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert image_limits.release_freed_memory() is False


_BURST_CHILD = textwrap.dedent("""
    import json, threading
    import numpy as np
    import image_corpus as corpus
    from mtan_ros.errors import ImageConversionError
    from mtan_ros.imaging.compressed import decode_compressed
    from mtan_ros.imaging.limits import keep_frame_buffers_mapped, release_freed_memory
    import sys
    if sys.argv[1] == "keep":
        assert keep_frame_buffers_mapped()
    sizes = [(1080, 1920), (1536, 2048), (2000, 3000), (1024, 2048), (2448, 3264)]
    frames = [corpus.jpeg_bytes(corpus.smooth_rgb(h, w, noise=0)) for h, w in sizes]
    bombs = [corpus.jpeg_bomb(), corpus.with_jpeg_size(frames[0], 4096, 3072)]

    def burst(count, keep):
        for index in range(count):
            data = frames[index % len(frames)]
            rgb = decode_compressed(data)
            for bad in bombs + [corpus.random_bytes_in_scan(data, index)]:
                try:
                    decode_compressed(bad)
                except ImageConversionError:
                    pass
            keep.append(np.ones(1000))  # small live objects between the big blocks, as a node has
            del rgb

    def burst_both(count, keep):  # the main thread and an executor-like thread (its own malloc arena)
        worker = threading.Thread(target=burst, args=(count, keep))
        worker.start()
        worker.join()
        burst(count, keep)

    keep = []
    np.ones(30 << 20, np.uint8)  # freed at once: like a running node, glibc's mmap threshold is up to 30 MB
    burst_both(len(frames), keep)  # decoders, caches and arenas warmed up
    release_freed_memory()
    before = corpus.memory_kb("VmRSS")
    burst_both(8, keep)
    during = corpus.memory_kb("VmRSS")
    released = release_freed_memory()
    print(json.dumps({"before": before, "during": during, "after": corpus.memory_kb("VmRSS"), "released": released}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status")
@pytest.mark.parametrize("allocator", ["default", "keep"])
def test_rss_returns_after_a_burst_of_large_decodes_and_refusals(allocator):
    """Also with the node's allocator settings (keep_frame_buffers_mapped): the refusals' memory goes back."""
    child = corpus.run_child(_BURST_CHILD, allocator, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    rss = json.loads(child.stdout)
    if not rss["released"]:
        pytest.skip(f"no malloc_trim in this C library: {rss}")
    assert rss["during"] > rss["before"] + 20_000, f"the burst should leave freed heap memory behind: {rss}"
    assert rss["after"] <= rss["before"] * 1.10, rss


_FRAME_CYCLE_CHILD = textwrap.dedent("""
    import array, json, resource, sys, threading
    from mtan_ros.imaging.limits import keep_frame_buffers_mapped
    kept = keep_frame_buffers_mapped() if sys.argv[1] == "keep" else False
    slot = []

    def frame():  # what a node does per 2 Mpx frame: allocate on one thread, free on another
        slot.append((array.array("B", b"\\1") * 6_000_000, bytes(6_000_000)))
        freer = threading.Thread(target=slot.clear)
        freer.start()
        freer.join()

    frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        frame()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"kept": kept, "faults_per_frame": (after - before) / 20}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_kept_frame_buffers_are_reused_without_page_faults():
    child = corpus.run_child(_FRAME_CYCLE_CHILD, "keep", timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    if not result["kept"]:
        pytest.skip(f"no glibc mallopt here: {result}")
    # 12 MB of fresh pages is about 2,900 faults (1,468 measured with glibc's defaults and fault-around);
    # reused ones cost only the freeing thread's start (73 measured).
    assert result["faults_per_frame"] < 300, result
