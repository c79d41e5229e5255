"""Start-up refusals of the perception node: a clear one-line error and a non-zero exit, no traceback."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("rclpy", reason="needs rclpy and sensor_msgs (pip install -e .[ros])")

from ros_helpers import NodeProcess, RosSession, handles_sigterm  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture(scope="module")
def ros():
    with RosSession("test_ros_node_startup") as session:
        yield session


def run_node(ros, *params: str) -> tuple[int, str]:
    args = ["--ros-args"]
    for param in params:
        args += ["-p", param]
    with NodeProcess(ros, args) as proc:
        code = proc.wait_exit(timeout=120)
        return code, proc.output()


def assert_refused(code: int, output: str, *words: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], output


def test_missing_checkpoint(ros, tmp_path):
    code, output = run_node(ros, f"model_path:={tmp_path / 'nowhere.pt'}")
    assert_refused(code, output, "nowhere.pt", "not found")


def test_invalid_checkpoint(ros, tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a checkpoint" * 100)
    code, output = run_node(ros, f"model_path:={bad}")
    assert_refused(code, output, "garbage.pt", "cannot load model_path")


def test_empty_model_path_says_how_to_set_it(ros):
    code, output = run_node(ros)
    assert_refused(code, output, "model_path is empty", "model_path:=")


def test_unknown_device(ros, tiny_checkpoint):
    code, output = run_node(ros, f"model_path:={tiny_checkpoint}", "device:=tpu")
    assert_refused(code, output, "device='tpu'")


@pytest.mark.parametrize("param,words", [("overlay_alpha:=2.0", "overlay_alpha is outside its range"),
                                         ("points_stride:=many", "points_stride must be an integer")])
def test_bad_parameter_values(ros, tiny_checkpoint, param, words):
    code, output = run_node(ros, f"model_path:={tiny_checkpoint}", param)
    assert_refused(code, output, words)


def _edited_checkpoint(source, path, **meta):
    """`source` with metadata fields replaced in the file itself, as a hostile user would."""
    import torch

    payload = torch.load(source, weights_only=True)
    model = dict(payload["meta"]["model"])
    for key in ("tasks", "width"):
        if key in meta:
            model[key] = meta.pop(key)
    payload["meta"] = {**payload["meta"], "model": model, **meta}
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("name,meta,words", [
    ("width8", {"width": 8.0}, "width 8.0"),
    ("huge_input", {"input_size": [8000, 8000]}, "8000"),
    ("odd_input", {"input_size": [63, 127]}, "not a multiple of 32"),
])
def test_crafted_checkpoints_are_one_line_refusals(ros, tiny_checkpoint, tmp_path, name, meta, words):
    path = _edited_checkpoint(tiny_checkpoint, tmp_path / f"{name}.pt", **meta)
    code, output = run_node(ros, f"model_path:={path}")
    assert_refused(code, output, "cannot load model_path", words)


def test_more_classes_than_mono8_can_carry_are_refused(ros, tiny_checkpoint, tmp_path):
    """300 classes: class ids would wrap around in a mono8 image, so the model is refused in one line."""
    names = [f"class{i}" for i in range(300)]
    path = _edited_checkpoint(tiny_checkpoint, tmp_path / "300.pt", tasks={"semantic": 300, "depth": 1},
                              class_names=names, class_colors=[[i % 256, 0, 0] for i in range(300)])
    code, output = run_node(ros, f"model_path:={path}")
    assert_refused(code, output, "300 output channels", "mono8")


def _in_the_graph(ros, namespace: str) -> bool:
    return ("perception_node", namespace) in ros.node.get_node_names_and_namespaces()


# Moments of start-up, each recognised by what can be seen from outside rather than by a delay (which a
# loaded machine would shift into another phase, or before the handlers exist): the entry point's signal
# handlers installed (it then imports rclpy, torch and the node), the node in the ROS graph (its model not
# yet loaded or loading), and its model configured (activation and warm-up still to come).
MOMENTS = ["handlers installed", "node in the graph", "model configured"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads signal handlers from Linux's /proc")
@pytest.mark.parametrize("signame,moment", [("SIGTERM", m) for m in MOMENTS] + [("SIGINT", "node in the graph")])
def test_a_stop_signal_at_any_moment_of_start_up_exits_cleanly(ros, tiny_checkpoint, signame, moment):
    """What `docker stop` and `systemctl stop` do to a node that is still importing or loading its model.

    Started as the installed `perception_node` executable starts it (mtan_ros.ros.executables).
    """
    import signal

    namespace = f"{ros.namespace}_{signame}_{MOMENTS.index(moment)}"
    with NodeProcess(ros, ["perception_node", "--ros-args", "-p", f"model_path:={tiny_checkpoint}"],
                     module="mtan_ros.ros.executables", namespace=namespace) as proc:
        reached = {"handlers installed": lambda: handles_sigterm(proc.proc.pid),
                   "node in the graph": lambda: _in_the_graph(ros, namespace),
                   "model configured": lambda: "configured: model" in proc.output()}[moment]
        ros.wait_for(lambda: reached() or not proc.alive(), 120, f"the node's start-up to reach '{moment}'")
        assert proc.alive(), proc.output()
        code = proc.stop(getattr(signal, signame), timeout=60)
        output = proc.output()
    assert code == 0, output
    assert "Traceback" not in output and "Error" not in output, output
