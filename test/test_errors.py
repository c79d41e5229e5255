"""One error family: every public exception of the package derives from MtanRosError, and
commands turn it into one line and a non-zero exit code."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import mtan_ros
from mtan_ros import errors
from mtan_ros.common.entry import INTERRUPTED_EXIT, USER_ERROR_EXIT, run_command


def _modules():
    for info in pkgutil.walk_packages(mtan_ros.__path__, "mtan_ros."):
        if info.name.startswith("mtan_ros.ros") and importlib.util.find_spec("rclpy") is None:
            continue
        yield importlib.import_module(info.name)


def test_every_public_exception_class_is_an_mtan_ros_error():
    found, outside = set(), []
    for module in _modules():
        for name, obj in vars(module).items():
            if not (inspect.isclass(obj) and issubclass(obj, BaseException)) or name.startswith("_"):
                continue
            if not obj.__module__.startswith("mtan_ros"):
                continue
            found.add(obj)
            if not issubclass(obj, errors.MtanRosError):
                outside.append(f"{obj.__module__}.{name}")
    assert not outside, f"exceptions outside the MtanRosError family: {outside}"
    assert {errors.ConfigError, errors.CheckpointError, errors.DataError, errors.BagCorruptError} <= found


def test_one_config_error():
    from mtan_ros.training.config import ConfigError as TrainingConfigError

    assert TrainingConfigError is errors.ConfigError
    assert issubclass(errors.ConfigError, ValueError)  # callers written against ValueError still work


def test_run_command_turns_errors_into_one_line(capsys):
    def broken():
        raise errors.CheckpointError("checkpoint 'x.pt' not found; train one with mtan-train")

    assert run_command("mtan-x", broken) == USER_ERROR_EXIT
    assert capsys.readouterr().err == "mtan-x: error: checkpoint 'x.pt' not found; train one with mtan-train\n"
    assert run_command("mtan-x", lambda: None) == 0
    assert run_command("mtan-x", lambda: 3) == 3

    def interrupted():
        raise KeyboardInterrupt

    assert run_command("mtan-x", interrupted, interrupted_hint="run it again") == INTERRUPTED_EXIT
    assert "mtan-x: interrupted; run it again" in capsys.readouterr().err


def test_bugs_keep_their_traceback():
    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_command("mtan-x", bug)


def _all_error_classes():
    for _ in _modules():
        pass  # import every module, so that every subclass is defined
    found, todo = [], [errors.MtanRosError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_is_rebuilt_from_its_line_and_survives_pickling():
    """Why: a DataLoader worker's error reaches the training process as `type(error)(message)`, and
    multiprocessing pickles errors; DataError needed (path, problem), so torch fell back to RuntimeError."""
    import pickle

    classes = _all_error_classes()
    assert {errors.DataError, errors.BagCorruptError, errors.ImageConversionError} <= set(classes)
    for cls in classes:
        rebuilt = cls("x.npy: depth has 3 NaN values")
        assert type(rebuilt) is cls and str(rebuilt) == "x.npy: depth has 3 NaN values", cls
    originals = [errors.DataError("/d/train/depth/2.npy", "depth has 3 NaN values", "finite values"),
                 errors.BagCorruptError("chunk 3 is damaged", messages_read=12, last_good_ns=5),
                 errors.ImageConversionError("bad encoding", kind="encoding")]
    for original in originals:
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original) and str(copy) == str(original)
        assert vars(copy) == vars(original)
    assert originals[0].path == "/d/train/depth/2.npy"
    assert str(originals[0]) == "/d/train/depth/2.npy: depth has 3 NaN values; expected finite values"
