"""Learning-rate schedules: closed forms of (epoch, batch), checked against their definitions."""
import math

import pytest

from mtan_ros.training.config import ConfigError, parse_train_args
from mtan_ros.training.schedule import LearningRateSchedule


def test_step_schedule_is_the_papers_midpoint_halving():
    s = LearningRateSchedule("step", 1e-4, epochs=200, steps_per_epoch=10, step_epochs=100, gamma=0.5)
    assert [s.lr(e, b) for e, b in ((0, 0), (99, 9), (100, 0), (199, 9))] == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5])


def test_cosine_warms_up_linearly_then_decays_to_zero():
    s = LearningRateSchedule("cosine", 2e-3, epochs=10, steps_per_epoch=10, warmup=0.1)  # 100 steps, 10 warm-up
    assert [s.lr(0, b) for b in range(10)] == pytest.approx([2e-3 * (b + 1) / 10 for b in range(10)])
    assert s.lr(1, 0) == pytest.approx(2e-3)  # the peak, right after the warm-up
    # q = (step - 10) / 90: cosine of the fraction of the decay done
    assert s.lr(5, 5) == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    after = [s.lr(e, b) for e in range(1, 10) for b in range(10)]
    assert all(a >= b for a, b in zip(after, after[1:])) and after[-1] < 2e-3 * 1e-3
    no_warmup = LearningRateSchedule("cosine", 1.0, epochs=2, steps_per_epoch=2)
    assert no_warmup.lr(0, 0) == 1.0 and no_warmup.lr(1, 0) == pytest.approx(0.5)


def test_onecycle_rises_from_a_25th_and_ends_near_zero():
    s = LearningRateSchedule("onecycle", 4e-3, epochs=4, steps_per_epoch=25, warmup=0.3)
    assert s.lr(0, 0) == pytest.approx(4e-3 / 25)
    assert s.lr(1, 5) == pytest.approx(4e-3)  # step 30: the end of the rise
    assert 4e-3 * 1e-4 < s.lr(3, 24) < 4e-3 * 1e-3  # the last batch: almost at lr * 1e-4


def test_changes_between_saved_and_current_settings_are_noticed():
    s = LearningRateSchedule("step", 1e-3, epochs=4, steps_per_epoch=3, step_epochs=2, gamma=0.5)
    assert not s.changed_from(s.state())
    assert not s.changed_from({"step_size": 2, "gamma": 0.5, "last_epoch": 3})  # torch StepLR state (older runs)
    assert s.changed_from({"step_size": 4, "gamma": 0.5})
    cosine = LearningRateSchedule("cosine", 1e-3, epochs=4, steps_per_epoch=3, warmup=0.05)
    assert cosine.changed_from(s.state()) and not cosine.changed_from(cosine.state())
    with pytest.raises(ValueError, match="choose one of step, cosine, onecycle"):
        LearningRateSchedule("linear", 1e-3, epochs=1, steps_per_epoch=1)


def test_schedule_options_on_the_command_line():
    cfg = parse_train_args(["--data", "d", "--schedule", "cosine", "--warmup", "0.1"])
    assert (cfg.schedule, cfg.warmup) == ("cosine", 0.1)
    assert parse_train_args(["--data", "d"]).schedule == "step"  # the paper's protocol stays the default
    with pytest.raises(ConfigError, match="warmup must be a fraction"):
        parse_train_args(["--data", "d", "--warmup", "1.5"])
    with pytest.raises(SystemExit):
        parse_train_args(["--data", "d", "--schedule", "linear"])
