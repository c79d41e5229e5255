"""Fast DDS settings for full-resolution images, applied only where the user has chosen none.

Why: with Fast DDS defaults, 2 Mpx images over best effort are silently dropped
(measured: none of 45 frames at 15 Hz arrive), and `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`
cannot talk to participants that do not use it too (a camera driver with defaults then
delivers nothing, even at VGA). The shipped profile config/fastdds_shm.xml only enlarges
the shared-memory segment and keeps UDP, so it never breaks a default participant.
perception.launch.py applies the same rule; tools that start nodes themselves
(benchmarks, the demo) can call `large_image_env()`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from mtan_ros.ros import share

PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
# Any of these set means the user configured Fast DDS: leave everything alone.
USER_TRANSPORT_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                            "FASTDDS_BUILTIN_TRANSPORTS")
PROFILE_RELATIVE = Path("config") / "fastdds_shm.xml"


def profile_path() -> Path | None:
    """config/fastdds_shm.xml next to the sources, else in the installed share; None if absent."""
    return share.find(PROFILE_RELATIVE)


def large_image_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to add to `environ` (default os.environ): the profile, or {} if the user chose."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in USER_TRANSPORT_VARIABLES):
        return {}
    path = profile_path()
    return {PROFILE_VARIABLE: str(path)} if path is not None else {}
