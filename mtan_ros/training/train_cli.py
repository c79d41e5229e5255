"""``mtan-train``: train MTAN or a baseline; see ``mtan-train --help``.

Exit status 0 on success, 2 for unusable settings, data or checkpoints (one line
on stderr), 130 when interrupted (the last finished epoch is in last.pt: rerun
with --resume to continue).
"""
from __future__ import annotations

import sys

from mtan_ros.common.entry import run_command

__all__ = ["main"]

PROG = "mtan-train"


def main(argv: list[str] | None = None) -> int:
    # torch: +1.3 s, measured with -X importtime; not paid on import
    from mtan_ros.training.config import parse_train_args

    parsed = []
    code = run_command(PROG, lambda: parsed.append(parse_train_args(argv)))
    if not parsed:
        return code
    config = parsed[0]

    def body() -> None:
        from mtan_ros.training.trainer import train  # torch: +1.3 s, measured with -X importtime; not paid on import

        train(config)

    return run_command(PROG, body, interrupted_hint=f"the last finished epoch is in {config.out}/last.pt; "
                                                    f"continue with `mtan-train --out {config.out} --resume`")


if __name__ == "__main__":
    sys.exit(main())
