"""Training configuration: defaults follow the paper; YAML sets anything; the command line wins."""
import pytest
import yaml

from mtan_ros.training.config import (ConfigError, TrainConfig, load_yaml, parse_train_args, save_config)


def test_defaults_follow_the_paper():
    cfg = parse_train_args(["--data", "d"])
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.temperature) == (1e-4, 8, 200, 2.0)
    assert (cfg.weighting, cfg.arch, cfg.width, cfg.lr_gamma) == ("equal", "mtan", 1.0, 0.5)
    assert cfg.resolved_lr_step == 100  # halve at the midpoint
    assert parse_train_args(["--data", "d", "--epochs", "7"]).resolved_lr_step == 4  # once, at epoch 4
    assert parse_train_args(["--data", "d", "--epochs", "2"]).resolved_lr_step == 1
    assert parse_train_args(["--data", "d", "--epochs", "7", "--lr-step", "2"]).resolved_lr_step == 2


def test_yaml_sets_flags_and_command_line_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    # "1e-3" without a dot is a string for YAML 1.1: it must still become a float.
    path.write_text("data: /data/cs\nepochs: 12\nlr: 1e-3\nbatch-size: 4\namp: true\nweighting: dwa\n"
                    "time_budget: 5\nlimit_val: null\n")
    cfg = parse_train_args(["--config", str(path), "--epochs", "3", "--no-amp"])
    assert cfg.data == "/data/cs" and cfg.lr == 1e-3 and cfg.batch_size == 4 and cfg.weighting == "dwa"
    assert cfg.epochs == 3 and cfg.amp is False  # command line wins
    assert cfg.max_minutes == 5.0 and cfg.limit_val is None


def test_resume_reads_the_runs_saved_config(tmp_path):
    out = tmp_path / "run"
    save_config(TrainConfig(data="/d", out=str(out), epochs=4, weighting="uncert", width=0.25), out / "config.yaml")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["weighting"] == "uncert" and "resume" not in saved and "config" not in saved
    cfg = parse_train_args(["--out", str(out), "--resume", "--epochs", "6"])
    assert cfg.resume and cfg.data == "/d" and cfg.weighting == "uncert" and cfg.width == 0.25 and cfg.epochs == 6
    # Without --resume the saved file is not consulted.
    with pytest.raises(ConfigError, match="--data"):
        parse_train_args(["--out", str(out)])


def test_bad_settings_are_reported_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'epoch'.*epochs"):
        load_yaml(bad)
    bad.write_text("epochs: three\n")
    with pytest.raises(ConfigError, match="epochs must be int"):
        load_yaml(bad)
    bad.write_text("weighting: gradnorm\ndata: x\n")
    with pytest.raises(ConfigError, match="weighting must be one of equal, dwa, uncert"):
        parse_train_args(["--config", str(bad)])
    bad.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="lr must be positive"):
        parse_train_args(["--data", "d", "--lr", "0"])
    with pytest.raises(SystemExit):
        parse_train_args(["--data", "d", "--arch", "resnet"])


def test_choices_come_from_the_registries():
    from mtan_ros.model import ARCHITECTURES
    from mtan_ros.training.compare import RUNS
    from mtan_ros.training.config import build_parser
    from mtan_ros.training.losses import LOSSES
    from mtan_ros.training.weighting import WEIGHTINGS

    choices = {a.dest: a.choices for a in build_parser()._actions}
    assert tuple(choices["arch"]) == ARCHITECTURES
    assert tuple(choices["weighting"]) == tuple(WEIGHTINGS) and "pcgrad" in choices["weighting"]
    assert tuple(choices["task"]) == tuple(LOSSES)
    assert all(run["arch"] in ARCHITECTURES and run["weighting"] in WEIGHTINGS for run in RUNS.values())
    assert parse_train_args(["--data", "d", "--weighting", "pcgrad"]).weighting == "pcgrad"


def test_settings_a_checkpoint_cannot_record_are_refused_before_training(tmp_path):
    """Width 4 or 2048x2048 images would only fail when the first checkpoint is saved, after an epoch."""
    import numpy as np

    from mtan_ros.errors import TrainingError
    from mtan_ros.training.config import TrainConfig
    from mtan_ros.training.trainer import train

    root = tmp_path / "data"
    for split in ("train", "val"):
        for kind, array in (("image", np.zeros((64, 128, 3), np.float32)), ("label", np.zeros((64, 128))),
                            ("depth", np.ones((64, 128, 1), np.float32))):
            folder = root / split / kind
            folder.mkdir(parents=True)
            np.save(folder / "0.npy", array)
    config = TrainConfig(data=str(root), out=str(tmp_path / "run"), epochs=1, batch_size=1, width=4.0,
                         workers=0, progress=False, tensorboard=False, plots=False)
    with pytest.raises(TrainingError, match="width 4.0"):
        train(config)
    assert not (tmp_path / "run" / "last.pt").exists()
