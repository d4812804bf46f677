import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import UnsafeLocalPath
from mirror.paths import safe_relative_path


def test_leading_slash_is_stripped():
    assert safe_relative_path("/a/b/model.safetensors") == PurePosixPath("a/b/model.safetensors")


@pytest.mark.parametrize("local_path", [
    "/../etc/passwd", "/a/../../b", "/a/./b", "//etc/passwd", "/a//b", "relative/path", "/",
    "/a\\..\\b", "/C:/Windows/x", "/a/b\x00c", "/a/\nb", "/.mirror/journal.sqlite",
    "/" + "x" * 256, "/" + "a/" * 600 + "b",
])
def test_hostile_local_paths_are_refused(local_path):
    with pytest.raises(UnsafeLocalPath):
        safe_relative_path(local_path)


@given(st.text(min_size=1, max_size=300))
def test_any_accepted_path_stays_inside_the_destination(text):
    dest = Path("/srv/dest")
    try:
        relative = safe_relative_path("/" + text)
    except UnsafeLocalPath:
        return
    joined = os.path.normpath(dest / relative)
    assert not relative.is_absolute()
    assert joined.startswith(str(dest) + os.sep)
    assert ".." not in relative.parts and "\x00" not in str(relative)
