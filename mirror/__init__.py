"""mirror: an async, high-throughput mirror of SageMaker hub content.

    import mirror
    result = mirror.sync_blocking(mirror.SyncSettings(name="my-model", dest=Path("/models")))
"""

__version__ = "0.1.0"

from .config import AwsSettings, StudioUrlSettings, SyncSettings
from .errors import (AccessDenied, ContentNotFound, DestinationBusy, DiskError, EulaRequired, ExitCode, HubError,
                     MirrorError, UnsafeLocalPath, UsageError, VerifyFailed)
from .manifest import VerifyReport
from .runner import SyncResult, sync, sync_blocking, verify

__all__ = [
    "AccessDenied",
    "AwsSettings",
    "ContentNotFound",
    "DestinationBusy",
    "DiskError",
    "EulaRequired",
    "ExitCode",
    "HubError",
    "MirrorError",
    "StudioUrlSettings",
    "SyncResult",
    "SyncSettings",
    "UnsafeLocalPath",
    "UsageError",
    "VerifyFailed",
    "VerifyReport",
    "__version__",
    "sync",
    "sync_blocking",
    "verify",
]
