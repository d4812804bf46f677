"""Progress for people: a rich display on a terminal, fed by the core's events.

Only the command line imports this module; the core never imports rich.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

from . import events


class RichProgress:
    """One overall bar (bytes, rate, ETA) and a files-done counter, on stderr."""

    def __init__(self, title: str, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[files]}"),
            console=console, transient=False, refresh_per_second=8,
        )
        self._task: TaskID = self._progress.add_task(title, total=0, files="")
        self._sized = self._done = self._failed = 0

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def __call__(self, event: events.Event) -> None:
        match event:
            case events.BytesWritten(count=count):
                self._progress.advance(self._task, count)
            case events.FileStarted(size=size, resumed_bytes=resumed):
                self._sized += size
                self._progress.update(self._task, total=self._sized, advance=resumed)
            case events.FileFinished() | events.FileSkipped():
                self._done += 1
                self._show_files()
            case events.FileRestarted(path=path, reason=reason):
                self._progress.console.print(f"[yellow]restarting[/] {path}: {reason}", markup=True,
                                             highlight=False)
            case events.FileFailed(path=path, reason=reason):
                self._failed += 1
                self._progress.console.print(f"[red]failed[/] {path}: {reason}")
                self._show_files()

    def _show_files(self) -> None:
        failed = f", {self._failed} failed" if self._failed else ""
        self._progress.update(self._task, files=f"{self._done} files{failed}")
