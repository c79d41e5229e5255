"""``mtan-train``: train MTAN or a baseline; see ``mtan-train --help``.

Exit status 0 on success, 2 for unusable settings or data, 1 when training
fails, 130 when interrupted (the last finished epoch is in last.pt: rerun with
--resume to continue).
"""
from __future__ import annotations

import sys

__all__ = ["main"]


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story for the user (no traceback)."""
    from mtan_ros.inference.checkpoint import CheckpointError

    from .config import ConfigError
    from .distributed import DeviceError
    from .trainer import TrainingError

    errors: list[type[BaseException]] = [ConfigError, TrainingError, CheckpointError, DeviceError,
                                         FileNotFoundError]
    try:
        from mtan_ros.data.errors import DataError

        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError, parse_train_args

    try:
        config = parse_train_args(argv)
    except ConfigError as exc:
        print(f"mtan-train: error: {exc}", file=sys.stderr)
        return 2
    from .trainer import train

    try:
        result = train(config)
    except KeyboardInterrupt:
        print(f"\nmtan-train: interrupted; the last finished epoch is in {config.out}/last.pt — continue with "
              f"`mtan-train --out {config.out} --resume`", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        print(f"mtan-train: error: {exc}", file=sys.stderr)
        return 2
    return 0 if result is not None else 1


if __name__ == "__main__":
    sys.exit(main())
