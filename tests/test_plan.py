from hypothesis import given
from hypothesis import strategies as st

from mirror.plan import Span, spans


def test_spans_cover_the_rest_of_a_file_in_chunks():
    assert spans(4, 20, 8) == [Span(4, 11), Span(12, 19)]
    assert spans(10, 10, 8) == []


@given(start=st.integers(0, 10_000), extra=st.integers(0, 10_000), chunk=st.integers(1, 5_000))
def test_spans_are_contiguous_disjoint_and_bounded(start, extra, chunk):
    size = start + extra
    result = spans(start, size, chunk)
    assert sum(s.end - s.start + 1 for s in result) == extra
    assert all(s.end - s.start + 1 <= chunk for s in result)
    assert all(a.end + 1 == b.start for a, b in zip(result, result[1:]))
    assert not result or (result[0].start == start and result[-1].end == size - 1)


from pathlib import PurePosixPath

import pytest

from mirror.plan import ListedPaths


@pytest.mark.parametrize("first, second, why", [
    ("a/b", "a/b", "listed twice"),
    ("a/b", "a/b/c", "folder a/b is a listed file"),
    ("a/b/c", "a/b", "folder of another listed file"),
    ("x.bin", "x.bin.part", "partial-download name of another"),
    ("x.bin.part", "x.bin", "partial-download name is another"),
])
def test_colliding_paths_are_named(first, second, why):
    listed = ListedPaths()
    listed.add(PurePosixPath(first))
    assert why in listed.conflict(PurePosixPath(second))


def test_case_only_differences_collide_only_where_the_destination_folds_case():
    sensitive, folding = ListedPaths(), ListedPaths(case_insensitive=True)
    for listed in (sensitive, folding):
        listed.add(PurePosixPath("Model/Config.json"))
    assert sensitive.conflict(PurePosixPath("model/config.json")) is None
    assert "differ only in case" in folding.conflict(PurePosixPath("model/config.json"))
    assert "folder" in folding.conflict(PurePosixPath("model/config.json/x"))
