"""Quoting user-supplied text short: values and paths of any length fit one log line."""
from __future__ import annotations

import pytest

from mtan_ros.common.text import PATH_QUOTE_LIMIT, quote, quote_path


@pytest.mark.parametrize("value, shown", [("rgb8", "'rgb8'"), (60, "60"), (["a"], "['a']")])
def test_short_values_are_quoted_whole(value, shown):
    assert quote(value) == shown


def test_long_values_of_any_type_are_cut_with_their_length():
    assert quote("x" * 100_000) == repr("x" * 61)[:61] + "... (100000 characters)"
    shown = quote(["item"] * 10_000)
    assert len(shown) < 100 and shown.endswith(f"... ({len(repr(['item'] * 10_000))} characters)")


def test_a_real_path_is_quoted_whole():
    path = "/home/robot/ws/install/mtan_ros/share/mtan_ros/models/cityscapes_mtan_w0.5.pt"
    assert quote_path(path) == f"'{path}'"


def test_a_huge_path_keeps_its_start_and_its_file_name():
    path = "/tmp/" + "m" * 100_000 + "/model.pt"
    shown = quote_path(path)
    assert shown.startswith("'/tmp/mmm") and shown.endswith(f"m/model.pt' ({len(path)} characters)")
    assert len(shown) == PATH_QUOTE_LIMIT + 2 + len(f" ({len(path)} characters)")


def test_control_characters_in_a_path_cannot_break_the_log_line():
    assert quote_path("/tmp/a\nb\\c.pt") == "'/tmp/a\\nb\\\\c.pt'"
