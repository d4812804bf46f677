"""mirror: an async, high-throughput mirror of SageMaker hub content.

    import mirror
    result = mirror.sync_blocking(mirror.SyncSettings(name="my-model", dest=Path("/models")))
"""

__version__ = "0.1.0"

from .config import AwsSettings, StudioUrlSettings, SyncSettings
from .errors import (AccessDenied, ContentNotFound, DiskError, EulaRequired, ExitCode, HubError, MirrorError,
                     UnsafeLocalPath, UsageError)
from .runner import SyncResult, sync, sync_blocking

__all__ = [
    "AccessDenied",
    "AwsSettings",
    "ContentNotFound",
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
    "__version__",
    "sync",
    "sync_blocking",
]
