"""Checkpoints: round trip, atomic writes, and refusal of unsafe or damaged files."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from conftest import make_checkpoint
from mtan_ros.depth_encoding import DepthEncoding
from mtan_ros.model.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from mtan_ros.model import build_model


@pytest.mark.slow
def test_round_trip_keeps_meta_weights_and_training_state(tmp_path, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    training_state = {"epoch": 3, "optimizer": {"lr": [1e-4]}, "rng": torch.get_rng_state(),
                      "dwa_history": [[1.0, 2.0], [0.5, 1.5]]}
    copy = save_checkpoint(tmp_path / "copy.pt", ckpt.state_dict, ckpt.meta, training_state)
    again = load_checkpoint(copy)
    assert again.meta == ckpt.meta
    assert again.meta.model.tasks == {"semantic": 7, "depth": 1}
    assert again.meta.input_size == (64, 128)
    assert again.meta.depth == DepthEncoding("metric", 1.0)
    assert again.meta.class_names[0] == ckpt.meta.class_names[0] and len(again.meta.class_colors) == 7
    assert set(again.state_dict) == set(ckpt.state_dict)
    for key, value in ckpt.state_dict.items():
        assert torch.equal(again.state_dict[key], value), key
    assert again.training_state["epoch"] == 3
    assert torch.equal(again.training_state["rng"], training_state["rng"])
    assert again.training_state["dwa_history"] == [[1.0, 2.0], [0.5, 1.5]]

    model_a = build_model_from_checkpoint(ckpt)
    model_b = build_model_from_checkpoint(again)
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        out_a, out_b = model_a(x), model_b(x)
    assert torch.equal(out_a["semantic"], out_b["semantic"])
    assert torch.equal(out_a["depth"], out_b["depth"])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mtan", "split", "single"])
def test_built_model_equals_the_saved_one(tmp_path, arch):
    """The model is materialised from the meta device: every tensor must come from the file."""
    path = make_checkpoint(tmp_path / f"{arch}.pt", arch=arch, seed=3)
    ckpt = load_checkpoint(path)
    reference = build_model(arch, ckpt.meta.model.tasks, ckpt.meta.model.width)
    reference.load_state_dict(ckpt.state_dict)
    model = build_model_from_checkpoint(ckpt)
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        got, want = model(x), reference.eval()(x)
    for task in want:
        assert torch.equal(got[task], want[task]), task


class _RunsCode:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Harmless:
    """A class that is not on the weights-only allow list."""


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text.strip() == text
    return text


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "mtan_ros.checkpoint", "version": 1, "meta": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused for safety") as info:
        load_checkpoint(path)
    assert "(Trying to load unsupported GLOBAL posix.system whose module posix is blocked.)" in _one_line(info)
    assert not marker.exists()

    other = tmp_path / "class.pt"
    torch.save({"format": "mtan_ros.checkpoint", "meta": _Harmless()}, other)
    with pytest.raises(CheckpointError, match="refused for safety") as info:
        load_checkpoint(other)
    text = _one_line(info)
    assert "GLOBAL test_checkpoint._Harmless was not an allowed global by default." in text
    assert "if you trust this class/function.)" in text  # the reason's whole line, not cut mid-sentence

    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError, match=r"is not a PyTorch checkpoint \(a pickle") as info:
        load_checkpoint(raw)
    _one_line(info)
    assert not marker.exists()


def test_truncated_file_is_a_one_line_error(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    for fraction in (0.5, 0.9, 0.999):
        cut = tmp_path / f"cut{fraction}.pt"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
            load_checkpoint(cut)
        assert str(cut) in _one_line(info)
    damaged = tmp_path / "damaged.pt"  # intact index, garbage where the pickled dict should be
    start = data.index(b"\x80\x02}q")
    damaged.write_bytes(data[:start] + bytes(64) + data[start + 64:])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        load_checkpoint(damaged)
    _one_line(info)


def test_foreign_and_garbage_files_say_what_they_are(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="a PyTorch file but not an mtan_ros checkpoint"):
        load_checkpoint(foreign)
    legacy = tmp_path / "legacy.pt"  # its loader would allocate storages at sizes the file declares
    torch.save({"weight": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"is not a PyTorch checkpoint \(a pickle: a legacy-format PyTorch"):
        load_checkpoint(legacy)
    cases = {
        "params.yaml": (b"model_path: /x/best.pt\ndevice: auto\n", r"\(a text file starting 'model_path: /x/best"),
        "empty.pt": (b"", r"\(the file is empty\)"),
        "random.pt": (bytes(range(7, 200)), r"\(unrecognised binary data starting with bytes 07 08 09"),
        "zipped.pt": (b"PK\x05\x06" + bytes(18), r"\(a zip archive without data.pkl\)"),
    }
    for name, (content, detail) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint " + detail) as info:
            load_checkpoint(path)
        assert "refused for safety" not in _one_line(info)
        assert "use a checkpoint written by `mtan-train`" in str(info.value)


def test_paths_that_are_not_regular_files(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="not found; train one with `mtan-train"):
        load_checkpoint(tmp_path / "absent.pt")
    dangling = tmp_path / "dangling.pt"
    dangling.symlink_to(tmp_path / "gone.pt")
    with pytest.raises(CheckpointError, match="is a symlink to '.*gone.pt', which does not exist"):
        load_checkpoint(dangling)

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_checkpoint(run)
    (run / "best.pt").write_bytes(tiny_checkpoint.read_bytes())
    with pytest.raises(CheckpointError, match="is a directory.*pass the file inside it, e.g. '.*run/best.pt'"):
        load_checkpoint(run)

    zero = tmp_path / "zero.pt"
    zero.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match=r"is a character device \(a symlink to '/dev/zero'\), not a "):
        load_checkpoint(zero)

    import socket

    sock_path = tmp_path / "s.pt"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        with pytest.raises(CheckpointError, match="is a socket, not a checkpoint file"):
            load_checkpoint(sock_path)


def test_a_fifo_is_named_and_never_opened(tmp_path):
    import threading

    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            load_checkpoint(fifo)
        except CheckpointError as exc:
            outcome.append(str(exc))

    # Opening a FIFO for reading waits for a writer; a daemon thread keeps a regression from hanging the run.
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the loader blocked on a FIFO"
    assert len(outcome) == 1 and "is a FIFO (named pipe), not a checkpoint file" in outcome[0]


def _raw_payload(path):
    return torch.load(path, weights_only=True)


def _crafted(tmp_path, source, name, state_dict=None, **meta_changes):
    """A copy of `source` with metadata edited in the file itself (None removes a field), as a tester would."""
    payload = _raw_payload(source)
    model = dict(payload["meta"]["model"])
    for key in ("arch", "tasks", "width"):
        if key in meta_changes:
            model[key] = meta_changes.pop(key)
    payload["meta"] = {**payload["meta"], "model": model, **meta_changes}
    payload["meta"] = {k: v for k, v in payload["meta"].items() if k not in meta_changes or v is not None}
    if state_dict is not None:
        payload["state_dict"] = state_dict
    path = tmp_path / name
    torch.save(payload, path)
    return path


BAD_META = {
    "width8": ({"width": 8.0}, r"width 8.0 is outside the supported range 0.015625..2"),
    "huge_input": ({"input_size": [8000, 8000]},
                   r"input_size 8000x8000 is too large: each side must be at most 2048 and the area at most "
                   r"2097152 pixels"),
    "wide_input": ({"input_size": [32, 4096]}, r"input_size 32x4096 is too large"),
    "odd_input": ({"input_size": [63, 127]},
                  r"input_size 63x127 is not a multiple of 32 on both sides .* nearest valid size is 64x128"),
    "zero_input": ({"input_size": [0, 128]}, r"input_size must be two positive integers"),
    "float_input": ({"input_size": [64.5, 128]}, r"input_size must be an integer, got 64.5"),
    "few_classes": ({"class_names": ["road", "car", "sky", "person", "tree"],
                     "class_colors": [[0, 0, 0]] * 5}, r"5 class names for a 7-class model"),
    "no_classes": ({"tasks": {"semantic": 0, "depth": 1}, "class_names": [], "class_colors": []},
                   r"task 'semantic' needs a positive integer channel count"),
    "nan_std": ({"std": [0.2, float("nan"), 0.2]}, r"std must be three finite numbers"),
    "zero_std": ({"std": [0.2, 0.0, 0.2]}, r"std must be positive"),
    "depth_kind": ({"depth": {"kind": "log", "scale": 1.0}}, r"depth encoding kind 'log' is not one of"),
    "depth_scale": ({"depth": {"kind": "inverse", "scale": -2.0}}, r"depth encoding scale must be a positive"),
    "arch": ({"arch": "resnet"}, r"unknown architecture 'resnet'; this mtan_ros builds mtan, split, single"),
    "depth_channels": ({"tasks": {"semantic": 7, "depth": 4}}, r"task 'depth' has 1 output channel\(s\)"),
    "many_channels": ({"tasks": {"semantic": 7, "depth": 1, "extra": 100000}},
                      r"task 'extra' has 100000 output channels; at most 255"),
    "task_name": ({"tasks": {"semantic": 7, "de.pth": 1}}, r"task names must be non-empty strings without '.'"),
    "colour": ({"class_colors": [[0, 0, 300]] * 7}, r"class colours must be three integers 0..255"),
    "text_mean": ({"mean": "0.5"}, r"mean must be a list, got '0.5'"),
    "missing": ({"input_size": None}, r"missing 'input_size'"),
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_invalid_metadata_is_refused_before_building(tmp_path, tiny_checkpoint, case):
    changes, message = BAD_META[case]
    path = _crafted(tmp_path, tiny_checkpoint, f"{case}.pt", **changes)
    with pytest.raises(CheckpointError, match=r"has invalid metadata: .*" + message) as info:
        load_checkpoint(path)
    assert _one_line(info).endswith("use a checkpoint written by `mtan-train` (best.pt or last.pt in its --out folder)")


def test_weights_that_do_not_fit_the_declared_model(tmp_path, tiny_checkpoint):
    """Checked on the meta device at load time, with the first differing shapes and both sizes named."""
    # 0.125-width weights (8-16-32-64-64 channels) under a 0.25-width spec (16-32-64-128-128).
    path = _crafted(tmp_path, tiny_checkpoint, "wider.pt", width=0.25)
    with pytest.raises(CheckpointError, match="weights do not fit a mtan model") as info:
        load_checkpoint(path)
    text = _one_line(info)
    assert "width 0.25 needs backbone.encoder.0.first.conv.weight of shape [16,3,3,3], the file has [8,3,3,3]" in text
    assert re.search(r"it needs \d\.\d M values, the file holds 0\.\d M", text)
    assert "more tensors differ" in text

    # Every parameter would exceed the file many times over: width 2.0 is in range but the file is tiny.
    huge = _crafted(tmp_path, tiny_checkpoint, "huge.pt", width=2.0)
    with pytest.raises(CheckpointError, match=r"width 2.0: it needs 164.8 M values, the file holds 0.\d M"):
        load_checkpoint(huge)

    ckpt = load_checkpoint(tiny_checkpoint)
    partial = dict(list(ckpt.state_dict.items())[:-3])
    with pytest.raises(CheckpointError, match="missing 3 weights"):
        load_checkpoint(_crafted(tmp_path, tiny_checkpoint, "partial.pt", state_dict=partial))
    extra = {**ckpt.state_dict, "heads.extra.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"1 unexpected weights \(e.g. heads.extra.weight\)"):
        load_checkpoint(_crafted(tmp_path, tiny_checkpoint, "extra.pt", state_dict=extra))
    typed = {**ckpt.state_dict, "heads.depth.output.bias": torch.zeros(1, dtype=torch.int64)}
    with pytest.raises(CheckpointError, match=r"needs heads.depth.output.bias of shape \[1\], the file has "
                                              r"\[1\] \(torch.int64\)"):
        load_checkpoint(_crafted(tmp_path, tiny_checkpoint, "typed.pt", state_dict=typed))
    not_tensors = {**ckpt.state_dict, "heads.depth.output.bias": [0.0]}
    with pytest.raises(CheckpointError, match="1 entries that are not named tensors"):
        load_checkpoint(_crafted(tmp_path, tiny_checkpoint, "lists.pt", state_dict=not_tensors))

    # A Checkpoint changed in memory is checked again before the real model is made.
    wrong = load_checkpoint(make_checkpoint(tmp_path / "wide.pt", width=0.25))
    wrong.state_dict = ckpt.state_dict
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model_from_checkpoint(wrong)


_LOAD_EACH = """
import sys, time
from mtan_ros.model.checkpoint import CheckpointError, build_model_from_checkpoint, load_checkpoint
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        build_model_from_checkpoint(load_checkpoint(path))
        outcome = "LOADED"
    except CheckpointError:
        outcome = "REFUSED"
    print(path, outcome, f"{time.perf_counter() - start:.2f}")
# VmHWM belongs to this program's own memory map. The parent's wait4 ru_maxrss would not do:
# a child started by vfork + exec is charged with the parent's peak too.
with open("/proc/self/status") as status:
    print("PEAK", next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def _load_in_fresh_process(paths) -> tuple[list[list[str]], int]:
    """([path, outcome, seconds] per file, peak RSS in KiB) of a new Python process that loads `paths`."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run([sys.executable, "-c", _LOAD_EACH, *map(str, paths)], stdout=subprocess.PIPE, env=env,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[-1][0] == "PEAK", result.stdout
    return lines[:-1], int(lines[-1][1])


@pytest.mark.slow
def test_refusing_an_oversized_checkpoint_allocates_nothing_big(tmp_path, tiny_checkpoint):
    """The tester's files grew the node past 5 GiB; refused before building, they cost what an import costs."""
    cases = {
        "width8.pt": {"width": 8.0},
        "input8000.pt": {"input_size": [8000, 8000]},
        "width2_tiny_weights.pt": {"width": 2.0},  # passes the metadata limits; caught by the meta-device check
    }
    paths = [_crafted(tmp_path, tiny_checkpoint, name, **changes) for name, changes in cases.items()]
    results, peak_kib = _load_in_fresh_process(paths)
    assert [(Path(path).name, outcome) for path, outcome, _ in results] == [(name, "REFUSED") for name in cases]
    for path, _, seconds in results:
        print(f"{Path(path).name}: refused in {seconds} s (loaded machine)")
    print(f"peak RSS of the loading process: {peak_kib / 1024:.0f} MiB")
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_saved_files_follow_the_umask(tmp_path, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "best.pt", ckpt.state_dict, ckpt.meta)
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        save_checkpoint(path, ckpt.state_dict, ckpt.meta)  # replaced: the new file's mode, not the old one's
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_the_same_checkpoint_are_removed(tmp_path, tiny_checkpoint, monkeypatch):
    ckpt = load_checkpoint(tiny_checkpoint)
    stale = [".last.pt.k2x9_q7a.tmp", f".last.pt.{_dead_pid()}.0a1b2c3d.tmp", f".last.pt.{os.getpid()}.deadbeef.tmp"]
    kept = [".best.pt.k2x9_q7a.tmp",  # another checkpoint's
            ".last.k2x9_q7a.tmp",  # a target named "last", not "last.pt"
            ".last.pt.k2x9_q7a.tmp.bak", "last.pt.k2x9_q7a.tmp",
            f".last.pt.{os.getppid()}.0a1b2c3d.tmp"]  # a running process may be writing it
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")

    real_save = torch.save
    seen_during_write = []

    def save_and_look(obj, handle, *args, **kwargs):
        # A second save to the same name while this one is being written must not delete its file.
        from mtan_ros.model.checkpoint import remove_stale_temporaries

        assert remove_stale_temporaries(tmp_path / "last.pt") == []
        seen_during_write.extend(p.name for p in tmp_path.iterdir() if p.name.startswith(".last.pt."))
        real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_and_look)
    save_checkpoint(tmp_path / "last.pt", ckpt.state_dict, ckpt.meta)
    own = [n for n in seen_during_write if n not in kept]
    assert len(own) == 1 and own[0].startswith(f".last.pt.{os.getpid()}.")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["last.pt"])
    assert load_checkpoint(tmp_path / "last.pt").meta == ckpt.meta


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, tiny_checkpoint, monkeypatch):
    target = tmp_path / "last.pt"
    target.write_bytes(tiny_checkpoint.read_bytes())
    before = target.read_bytes()
    ckpt = load_checkpoint(target)

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, ckpt.state_dict, ckpt.meta)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
