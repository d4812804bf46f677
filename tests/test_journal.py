from pathlib import Path

import pytest

from mirror.errors import DestinationBusy
from mirror.journal import Completion, DestinationLock, Journal
from mirror.plan import Action, Coverage, Span, decide


def test_spans_survive_reopening(tmp_path: Path):
    journal = Journal.open(tmp_path)
    journal.start("a/b.bin", 100, "etag", "{}")
    journal.add_span("a/b.bin", 0, 9)
    journal.add_span("a/b.bin", 50, 59)
    journal.close()
    reopened = Journal.open(tmp_path)
    assert reopened.spans("a/b.bin") == [(0, 9), (50, 59)]
    record = reopened.records()["a/b.bin"]
    assert (record.size, record.etag, record.state) == (100, "etag", "partial")


def test_completion_clears_spans_and_records_the_verdict(tmp_path: Path):
    journal = Journal.open(tmp_path)
    journal.start("f", 10, "e", "{}")
    journal.add_span("f", 0, 4)
    journal.complete([Completion("f", 10, "e", "{}", True, "md5", "", "ab", 5)])
    assert journal.spans("f") == []
    record = journal.records()["f"]
    assert (record.state, record.verified, record.method, record.mtime_ns) == ("complete", True, "md5", 5)


def test_a_second_lock_on_the_same_destination_is_refused(tmp_path: Path):
    with DestinationLock(tmp_path):
        with pytest.raises(DestinationBusy, match="another mirror"):
            DestinationLock(tmp_path).acquire()
    with DestinationLock(tmp_path):  # released: free again
        pass


def test_coverage_merges_and_finds_gaps():
    coverage = Coverage([(10, 19), (0, 4)])
    coverage.add(5, 9)
    assert coverage.prefix() == 20
    coverage.add(30, 39)
    assert coverage.missing(50, 8) == [Span(20, 27), Span(28, 29), Span(40, 47), Span(48, 49)]
    assert not coverage.complete(50)


def test_decide_from_journal_and_disk(tmp_path: Path):
    journal = Journal.open(tmp_path)
    journal.start("f", 3, "e", "{}")
    partial = journal.records()["f"]
    (tmp_path / "f.part").write_bytes(b"abc")
    (tmp_path / "g").write_bytes(b"abc")
    part, final = (tmp_path / "f.part").stat(), (tmp_path / "g").stat()
    assert decide(None, None, None) is Action.FETCH
    assert decide(partial, None, part) is Action.RESUME
    assert decide(partial, final, None) is Action.ADOPT
    journal.complete([Completion("f", 3, "e", "{}", True, "md5", "", "x", final.st_mtime_ns)])
    complete = journal.records()["f"]
    assert decide(complete, final, None) is Action.PROBE
    (tmp_path / "g").write_bytes(b"abcd")  # touched locally: fetch again
    assert decide(complete, (tmp_path / "g").stat(), None) is Action.FETCH
