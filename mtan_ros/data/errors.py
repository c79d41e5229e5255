"""Bad dataset content raises `DataError` (defined with the package's other errors).

Training on a broken copy of a dataset fails far from the cause (a NaN loss
hours later, a shape error inside a batch). Readers therefore check each file
as it is read and raise `DataError` with a one-line message that names the file,
says what is wrong and what was expected, so the user can fix or remove it.
"""
from mtan_ros.errors import DataError, PathLike

__all__ = ["DataError", "PathLike"]
