"""Every error the mirror raises on purpose, and the exit code each one maps to.

    MirrorError                     base; carries `exit_code`
    ├── UsageError                  bad argument, option or config value (before any call)
    ├── HubError                    the SageMaker API refused or failed
    │   ├── ContentNotFound         ResourceNotFound: no such hub, content or version
    │   ├── EulaRequired            gated content asked for without --accept-eula
    │   └── AccessDenied            AccessDeniedException, missing or bad credentials
    ├── Unverified                  a file nothing can verify, with --require-verified
    ├── DiskError                   the destination cannot be written (space, permission)
    ├── DestinationBusy             another process holds DEST/.mirror/lock
    ├── VerifyFailed                `mirror verify` found differences
    ├── Interrupted                 SIGINT / SIGTERM stopped the run
    ├── UnsafeUrl                   the service sent an object URL outside the URL policy
    └── UnsafeLocalPath             the service sent a LocalPath that would escape DEST

A file that fails after its retries is not an exception: `sync()` reports it in
`SyncResult.failed` and goes on with the others; the CLI then exits with TRANSFER_FAILED.

Library errors (botocore, aiohttp, OSError) are translated where they enter the program,
with `raise ... from exc`, so the command line only ever prints one of these.
"""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    """Process exit codes, documented in the README's "Exit codes" table."""

    OK = 0
    INTERNAL = 1  # a bug: an error nobody translated
    USAGE = 2  # bad arguments, config or environment; nothing was called
    NOT_FOUND = 3  # hub, content or version does not exist
    EULA_REQUIRED = 4  # gated content: re-run with --accept-eula
    ACCESS_DENIED = 5  # credentials missing/invalid or not allowed
    HUB_ERROR = 6  # any other SageMaker API failure (throttled past retries, unreachable)
    TRANSFER_FAILED = 7  # some files failed; the others are complete
    DISK_ERROR = 8  # the destination could not be written
    UNSAFE_CONTENT = 9  # the service answered with a LocalPath or URL the mirror refuses
    VERIFY_FAILED = 10  # `mirror verify` found files that differ, are missing or extra
    BUSY = 11  # another mirror process holds the destination's lock
    INTERRUPTED = 130  # SIGINT
    TERMINATED = 143  # SIGTERM


class MirrorError(Exception):
    """Base of every error the mirror raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(MirrorError):
    """A flag, config key or value is invalid; raised before any network call."""

    exit_code = ExitCode.USAGE


class HubError(MirrorError):
    """The SageMaker API failed for a reason not covered by a subclass."""

    exit_code = ExitCode.HUB_ERROR


class ContentNotFound(HubError):
    """The hub, the content or the requested version does not exist."""

    exit_code = ExitCode.NOT_FOUND


class EulaRequired(HubError):
    """The content is gated and the request did not accept its EULA."""

    exit_code = ExitCode.EULA_REQUIRED


class AccessDenied(HubError):
    """Credentials are missing or invalid, or the principal is not allowed."""

    exit_code = ExitCode.ACCESS_DENIED


class Unverified(MirrorError):
    """A file nothing can verify (e.g. an SSE-KMS ETag) while --require-verified is set;
    reported as that file's failure."""

    exit_code = ExitCode.TRANSFER_FAILED


class DiskError(MirrorError):
    """The destination cannot be written: no space, no permission, read-only.

    `fatal` errors (no space, read-only, quota) would fail every other file too, so they
    stop the whole run instead of one file.
    """

    exit_code = ExitCode.DISK_ERROR

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class DestinationBusy(MirrorError):
    """Another mirror process is writing the same destination."""

    exit_code = ExitCode.BUSY


class VerifyFailed(MirrorError):
    """`mirror verify` found files that differ from the manifest, are missing, or extra."""

    exit_code = ExitCode.VERIFY_FAILED


class Interrupted(MirrorError):
    """SIGINT or SIGTERM stopped the run; partial files and the journal are kept."""

    def __init__(self, signum: int) -> None:
        name = "terminated" if signum == signal.SIGTERM else "interrupted"
        super().__init__(f"{name}: partial files are kept; run the same command again to resume")
        self.exit_code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED


class UnsafeUrl(MirrorError):
    """The service sent an object URL outside the URL policy (scheme or host)."""

    exit_code = ExitCode.UNSAFE_CONTENT


class UnsafeLocalPath(MirrorError):
    """A LocalPath from the service would land outside DEST or is otherwise unusable."""

    exit_code = ExitCode.UNSAFE_CONTENT
