"""How every console command ends: its result, or one line and a non-zero exit code.

Each command's `main` hands its body to `run_command`, which catches the
package's error family once (`MtanRosError`: something the user can fix) and
Ctrl-C, so no command lists by hand which errors it expects and none of them
prints a traceback for a mistake in its input. Anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

from mtan_ros.errors import MtanRosError

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


def run_command(prog: str, body: Callable[[], Optional[int]], *, interrupted_hint: str = "",
                error_exit: int = USER_ERROR_EXIT) -> int:
    """Run `body` and return its exit code (None counts as 0).

    MtanRosError -> "<prog>: error: <message>" on stderr and `error_exit`;
    KeyboardInterrupt -> "<prog>: interrupted[; hint]" and 130.
    """
    try:
        code = body()
    except MtanRosError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return error_exit
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted" + (f"; {interrupted_hint}" if interrupted_hint else ""), file=sys.stderr,
              flush=True)
        return INTERRUPTED_EXIT
    return 0 if code is None else int(code)
