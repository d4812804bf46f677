"""Output for machines and logs: JSON lines, a Prometheus textfile, and a plain event log.

Only the command line uses this module; like `progress.py`, it renders the core's events.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Any

from . import events, presign
from .runner import SyncResult

_QUIET_EVENTS = (events.BytesWritten,)  # one per write: far too many for a log


def _name(event: events.Event) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


class JsonLines:
    """One JSON object per event on stdout, then a summary object; nothing else there."""

    def __init__(self, stream: IO[str] | None = None, job: str | None = None) -> None:
        self._stream = stream or sys.stdout
        self._job = job

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, _QUIET_EVENTS):
            return
        self._write({"event": _name(event), **dataclasses.asdict(event)})

    def summary(self, result: SyncResult, exit_code: int) -> None:
        self._write({"event": "summary", **summary_fields(result), "exit_code": exit_code})

    def _write(self, record: dict[str, Any]) -> None:
        if self._job is not None:
            record["job"] = self._job
        self._stream.write(presign.scrub(json.dumps(record, default=str)) + "\n")
        self._stream.flush()


def summary_fields(result: SyncResult) -> dict[str, Any]:
    return {
        "ok": result.ok, "dest": str(result.dest), "version": result.version,
        "files": len(result.completed), "fetched": len(result.completed) - len(result.skipped),
        "skipped": len(result.skipped), "verified": len(result.verified), "unverified": result.unverified,
        "failed": result.failed, "refused": result.refused, "extra": result.extra, "deleted": result.deleted,
        "planned": result.planned, "bytes_downloaded": result.bytes_downloaded, "retries": result.retries,
        "url_refreshes": result.url_refreshes, "prewarmed_bytes": result.prewarmed_bytes,
        "elapsed_seconds": round(result.elapsed, 3),
    }


class EventLog:
    """A line on stderr for each event worth a person's attention (-v)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr

    def __call__(self, event: events.Event) -> None:
        line = _describe(event)
        if line:
            self._stream.write(presign.scrub(line) + "\n")
            self._stream.flush()


def _describe(event: events.Event) -> str | None:
    match event:
        case events.Retrying(path=path, reason=reason, attempt=attempt, delay=delay):
            return f"retry {attempt} for {path} in {delay:.1f} s: {reason}"
        case events.UrlsRefreshed(page=page, count=count, reason=reason):
            return f"renewed {count} URLs of page {page} ({reason})"
        case events.FileRestarted(path=path, reason=reason):
            return f"restarting {path}: {reason}"
        case events.FileFinished(path=path, verification=how):
            return f"done {path} ({how})"
        case events.FileSkipped(path=path):
            return f"unchanged {path}"
        case events.FilePlanned(path=path, action=action, detail=detail):
            return f"would {action} {path}" + (f" ({detail})" if detail else "")
        case events.PageListed(page=page, files=files):
            return f"listed page {page}: {files} files"
    return None


def fan_out(*observers: events.Observer) -> events.Observer:
    def observe(event: events.Event) -> None:
        for observer in observers:
            observer(event)
    return observe


def write_metrics(path: Path, result: SyncResult, *, name: str, job: str | None, exit_code: int) -> None:
    """A Prometheus textfile for node_exporter, replaced atomically (never half written)."""
    labels = f'content="{name}",job="{job or name}"'
    gauges = [
        ("mirror_last_run_success", "1 if the last run mirrored everything, else 0.", int(exit_code == 0)),
        ("mirror_last_run_timestamp_seconds", "When the last run ended (unix time).", round(time.time(), 3)),
        ("mirror_last_run_duration_seconds", "Wall time of the last run.", round(result.elapsed, 3)),
        ("mirror_last_run_bytes_downloaded", "Payload bytes downloaded by the last run.", result.bytes_downloaded),
        ("mirror_last_run_retries", "Requests retried after a transient fault.", result.retries),
        ("mirror_last_run_url_refreshes", "Pages of presigned URLs renewed.", result.url_refreshes),
    ]
    lines = []
    for metric, help_text, value in gauges:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", f"{metric}{{{labels}}} {value}"]
    lines += ["# HELP mirror_last_run_files Files of the last run by outcome.", "# TYPE mirror_last_run_files gauge"]
    counts = {"fetched": len(result.completed) - len(result.skipped), "skipped": len(result.skipped),
              "failed": len(result.failed) + len(result.refused), "unverified": len(result.unverified)}
    lines += [f'mirror_last_run_files{{{labels},outcome="{k}"}} {v}' for k, v in counts.items()]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, path)
