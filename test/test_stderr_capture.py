"""fd 2 capture around a C call: claimed lines come back as values, others still reach stderr."""
from __future__ import annotations

import os
import re
import threading

import pytest

from mtan_ros.common.stderr_capture import call_claiming_stderr

CLAIM = re.compile(r"Corrupt JPEG data")


def write_fd2(text: str):
    def call():
        os.write(2, text.encode())
        return 42

    return call


def test_claimed_lines_are_returned_and_others_pass_through(capfd):
    result, lines = call_claiming_stderr(write_fd2("other line\nCorrupt JPEG data: bad Huffman code\ntail"), CLAIM)
    assert result == 42 and lines == ["Corrupt JPEG data: bad Huffman code"]
    assert capfd.readouterr().err == "other line\ntail"


def test_a_lot_of_output_does_not_block(capfd):
    text = "Corrupt JPEG data: premature end of data segment\n" * 20_000  # ~1 MB, far beyond a pipe buffer
    _, lines = call_claiming_stderr(write_fd2(text), CLAIM)
    assert len(lines) == 20_000 and capfd.readouterr().err == ""


def test_fd2_is_restored_when_the_call_raises(capfd):
    def fails():
        os.write(2, b"Corrupt JPEG data: x\n")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        call_claiming_stderr(fails, CLAIM)
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "Corrupt JPEG data: x\nafter\n"  # nothing claimed, nothing lost


def test_concurrent_captures_keep_their_own_lines(capfd):
    results: dict[int, list[str]] = {}

    def worker(index: int) -> None:
        for _ in range(20):
            _, lines = call_claiming_stderr(write_fd2(f"Corrupt JPEG data: {index}\n"), CLAIM)
            assert lines == [f"Corrupt JPEG data: {index}"]
        results[index] = lines

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 1, 2, 3] and capfd.readouterr().err == ""
