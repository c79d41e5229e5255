"""The one exception type for bad dataset content.

Training on a broken copy of a dataset fails far from the cause (a NaN loss
hours later, a shape error inside a batch). Readers therefore check each file
as it is read and raise `DataError` with a one-line message that names the file,
says what is wrong and what was expected, so the user can fix or remove it.
"""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or has unexpected content.

    `path` is the offending file or folder; `str(error)` is a single line of the form
    "<path>: <what is wrong>; expected <what should be there>".
    """

    def __init__(self, path: Optional[PathLike], problem: str, expected: Optional[str] = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.expected = expected
        text = problem if self.path is None else f"{self.path}: {problem}"
        if expected:
            text += f"; expected {expected}"
        super().__init__(" ".join(text.split()))
