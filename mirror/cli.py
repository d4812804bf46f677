"""The `mirror` command line: a thin layer over `mirror.sync()` and friends.

Only this layer parses arguments, prints, and picks the exit code (`errors.ExitCode`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import anyio
from rich.console import Console

from . import __version__, events, presign
from .config import (AwsSettings, StudioUrlSettings, SyncSettings, build_aws_settings, build_sync_settings,
                     format_size, parse_size, read_config_file, shard_from_environment)
from .hub import ContentRef
from .plan import PathFilter
from .reporting import EventLog, JsonLines, fan_out, write_metrics
from .errors import ExitCode, Interrupted, MirrorError, UsageError
from .runner import SyncResult, list_content, loop_options, sync, verify

EPILOG_SYNC = """examples:
  mirror sync meta-textgeneration-llama-3-8b --dest /models/llama --accept-eula
  mirror sync my-model --hub my-private-hub --version 2.1.0 --dest /fsx/models
  mirror sync my-model --dest /models/m --include '*.safetensors' --include config.json
  mirror sync --config mirror.toml                 # every [jobs.NAME] in the file
  mirror sync --config mirror.toml --job llama --dry-run
  mirror sync my-model --dest /shared/m --shard-count 8   # K from JOB_COMPLETION_INDEX
  mirror sync my-model --dest /models/m --json --metrics-file /var/lib/node_exporter/mirror.prom

limits: --concurrency caps simultaneous requests (default 16); --per-host-connections caps
those to any one host; --max-bandwidth caps the total rate (default: none).
"""
EPILOG_LS = """examples:
  mirror ls meta-textgeneration-llama-3-8b
  mirror ls my-model --version 2.1.0 --sizes --include '*.safetensors'
"""
EPILOG_DEMO = """example:
  mirror demo --dest /tmp/mirror-demo && mirror verify /tmp/mirror-demo
"""
EPILOG_VERIFY = """example:
  mirror verify /models/llama && echo intact
"""
EPILOG_STUDIO = """example:
  mirror studio-url --domain-id d-abc123 --user-profile data-scientist --expires-in 60
"""
EPILOG_EMULATOR = """example:
  mirror emulator --root ./content --url-ttl 60 --conn-rate 10MiB
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit with ExitCode.USAGE."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mirror", description="Mirror SageMaker hub content to local or shared storage.")
    parser.add_argument("--version", action="version", version=f"mirror {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_sync(commands)
    _add_ls(commands)
    _add_verify(commands)
    _add_studio_url(commands)
    _add_emulator(commands)
    _add_demo(commands)
    return parser


def _add_aws_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS")
    group.add_argument("--region", help="AWS region (default: the AWS config chain)")
    group.add_argument("--profile", help="AWS profile name")
    group.add_argument("--endpoint-url", dest="endpoint_url", help="SageMaker API endpoint, e.g. the emulator's")
    group.add_argument("--api-timeout", dest="api_timeout", type=float,
                       help="seconds to wait for an API answer before retrying (default 60)")
    group.add_argument("--api-attempts", dest="api_attempts", type=int,
                       help="attempts per API call, with botocore's backoff (default 8)")
    group.add_argument("--ca-bundle", dest="ca_bundle",
                       help="PEM file of extra CAs to trust, for API and downloads (or AWS_CA_BUNDLE)")


def _add_sync(commands: Any) -> None:
    p = commands.add_parser("sync", help="mirror one hub content version into a directory",
                            description="Mirror one hub content version into DEST.", epilog=EPILOG_SYNC,
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            argument_default=argparse.SUPPRESS)
    p.add_argument("name", nargs="?", help="hub content name (or `name` in the config file)")
    p.add_argument("--dest", help="destination directory")
    p.add_argument("--hub", help="hub name or ARN (default SageMakerPublicHub)")
    p.add_argument("--type", help="Model, Notebook, ModelReference, DataSet or JsonDoc (default Model)")
    p.add_argument("--version", help="MAJOR.MINOR.PATCH or `latest` (default: latest)")
    p.add_argument("--accept-eula", dest="accept_eula", action="store_true", help="accept the EULA of gated content")
    p.add_argument("--expected-s3-url", dest="expected_s3_url", help="fail unless the content lives under this S3 URL")
    p.add_argument("--concurrency", type=int, help="simultaneous HTTP requests (default 16)")
    p.add_argument("--chunk-size", dest="chunk_size", help="bytes per ranged GET, e.g. 8MiB (default 8MiB)")
    p.add_argument("--page-size", dest="page_size", type=int, help="URLs per API page, 1-100 (default 100)")
    p.add_argument("--refresh-margin", dest="refresh_margin", type=float,
                   help="renew URLs with less life left than this many seconds; 0 = only after a 403 (default 60)")
    p.add_argument("--retries", type=int, help="attempts per chunk on transient errors (default 8)")
    p.add_argument("--require-verified", dest="require_verified", action="store_true",
                   help="fail files that no ETag or checksum can verify (e.g. SSE-KMS objects)")
    p.add_argument("--delete", action="store_true",
                   help="remove files under DEST that the content no longer lists (never .mirror/)")
    p.add_argument("--allow-http", dest="allow_http", action="store_true",
                   help="accept plain-http object URLs to hosts other than loopback")
    p.add_argument("--allow-host", dest="allow_hosts", action="append", metavar="HOST",
                   help="accept object URLs to HOST besides S3 endpoints (repeatable)")
    _add_filter_flags(p)
    p.add_argument("--max-bandwidth", dest="max_bandwidth", metavar="RATE",
                   help="total download rate cap, e.g. 500MB/s or 1GiB/s (default: none)")
    p.add_argument("--per-host-connections", dest="per_host_connections", type=int, metavar="N",
                   help="at most N connections to one host (default: no limit besides --concurrency)")
    p.add_argument("--shard", metavar="K/N", help="take only shard K of N (K from 0) of the file list")
    p.add_argument("--shard-count", dest="shard_count", type=int, metavar="N",
                   help="N shards, K read from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID")
    p.add_argument("--prewarm", action="store_true", help="read finished files into the page cache before exiting")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print what would be fetched, skipped, resumed and deleted; change nothing")
    p.add_argument("--config", type=Path, help="TOML file with defaults and [jobs.NAME] tables (flags win)")
    p.add_argument("--job", help="run only this [jobs.NAME] of the config file (default: all)")
    _add_output_flags(p)
    _add_aws_flags(p)
    p.set_defaults(handler=_run_sync)


def _add_filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--include", action="append", metavar="GLOB",
                        help="only files matching GLOB (repeatable; gitignore-like, see README)")
    parser.add_argument("--exclude", action="append", metavar="GLOB", help="skip files matching GLOB (repeatable)")


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per event on stdout, then a summary object")
    parser.add_argument("--metrics-file", dest="metrics_file", type=Path, metavar="PATH",
                        help="write a Prometheus textfile (for node_exporter) at the end")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per retry, renewal and file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def _add_ls(commands: Any) -> None:
    p = commands.add_parser("ls", help="list a content version's files without downloading",
                            description="List the files (LocalPath) of a hub content version.", epilog=EPILOG_LS,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--hub", default="SageMakerPublicHub")
    p.add_argument("--type", default="Model")
    p.add_argument("--version", help="MAJOR.MINOR.PATCH or latest (default)")
    p.add_argument("--accept-eula", dest="accept_eula", action="store_true")
    p.add_argument("--sizes", action="store_true", help="probe each file's size (one empty ranged GET each)")
    p.add_argument("--json", action="store_true", help="a JSON array of {path, size}")
    _add_filter_flags(p)
    _add_aws_flags(p)
    p.set_defaults(handler=_run_ls)


def _add_verify(commands: Any) -> None:
    p = commands.add_parser("verify", help="re-hash a mirrored directory against its manifest",
                            description="Re-hash every file under DEST against DEST/.mirror/manifest.json and "
                                        "list what differs, is missing or is extra. Exit 0 only if all match.",
                            epilog=EPILOG_VERIFY, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", type=Path)
    p.set_defaults(handler=_run_verify)


def _add_studio_url(commands: Any) -> None:
    p = commands.add_parser("studio-url", help="print a SageMaker Studio sign-in URL",
                            description="Print a presigned SageMaker Studio URL (CreatePresignedDomainUrl).",
                            epilog=EPILOG_STUDIO, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain-id", dest="domain_id", required=True)
    p.add_argument("--user-profile", dest="user_profile", required=True)
    p.add_argument("--space")
    p.add_argument("--expires-in", dest="expires_in", type=int, help="URL lifetime, 5-300 s (default 300)")
    p.add_argument("--session-expiration", dest="session_expiration", type=int,
                   help="session length, 1800-43200 s (default 43200)")
    p.add_argument("--landing-uri", dest="landing_uri")
    _add_aws_flags(p)
    p.set_defaults(handler=_run_studio_url)


def _add_emulator(commands: Any) -> None:
    p = commands.add_parser("emulator", help="serve a local SageMaker + S3 emulator",
                            description="Serve ROOT/<content-name>/<version>/<files> as SageMaker hub content. "
                                        "Prints `endpoint URL` first, then runs until SIGINT/SIGTERM.",
                            epilog=EPILOG_EMULATOR, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--url-ttl", dest="url_ttl", type=int, default=900, help="presigned URL lifetime, seconds")
    p.add_argument("--conn-rate", dest="conn_rate", help="bytes/s per connection, e.g. 10MiB")
    p.add_argument("--latency", type=float, default=0.0, help="milliseconds added to every response")
    p.add_argument("--page-delay", dest="page_delay", type=float, default=0.0, help="seconds added to every page")
    p.add_argument("--part-size", dest="part_size", default="8MiB", help="multipart ETags above this size")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault injector")
    p.add_argument("--fault-budget", dest="fault_budget", type=int, help="inject at most N faults in all")
    p.add_argument("--fault", action="append", default=[], metavar="NAME=RATE",
                   help="inject a fault at RATE (0-1): slowdown, internal, reset, truncate, ignore-range, flip, "
                        "expire-early (object GETs); throttle, api-stall, token-refused (API calls)")
    p.add_argument("--stall", type=float, default=90.0, help="seconds an api-stall fault hangs")
    p.add_argument("--tls-cert", dest="tls_cert", type=Path, help="serve https with this PEM certificate")
    p.add_argument("--tls-key", dest="tls_key", type=Path, help="the certificate's PEM private key")
    p.add_argument("--checksum", choices=("sha256", "sha1", "crc32", "crc32c", "crc64nvme"),
                   help="send a full-object x-amz-checksum-<ALGO> header with every object")
    p.set_defaults(handler=_run_emulator)


def _add_demo(commands: Any) -> None:
    p = commands.add_parser("demo", help="mirror generated content from a built-in emulator",
                            description="Start the emulator in-process with ~250 MiB of generated content, "
                                        "mirror it, and check every byte.",
                            epilog=EPILOG_DEMO, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, default=Path("mirror-demo"))
    p.set_defaults(handler=_run_demo)


# --- handlers ------------------------------------------------------------------------------


_NOT_SETTINGS = ("command", "handler", "config", "job", "json", "metrics_file", "verbose", "quiet", "shard_count")


def _run_sync(args: argparse.Namespace, console: Console) -> int:
    """Every job of the config (or the one named, or the flags alone); the worst exit code."""
    config = read_config_file(args.config) if hasattr(args, "config") else None
    job = getattr(args, "job", None)
    if job is not None and config is None:
        raise UsageError("--job: needs --config FILE")
    given = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
    if hasattr(args, "shard_count"):
        given["shard"] = "/".join(map(str, shard_from_environment(args.shard_count)))
    jobs = [job] if job is not None else (sorted(config.jobs) if config is not None and config.jobs else [None])
    all_settings = [(name, build_sync_settings(given, config, name)) for name in jobs]  # all checked first
    codes = [_sync_one(name, settings, args, console, several=len(jobs) > 1) for name, settings in all_settings]
    return max(codes)


def _sync_one(job: str | None, settings: SyncSettings, args: argparse.Namespace, console: Console,
              *, several: bool) -> int:
    as_json, quiet = getattr(args, "json", False), getattr(args, "quiet", False)
    machine = JsonLines(job=job) if as_json else None
    extra = [o for o in (machine, EventLog() if getattr(args, "verbose", False) else None) if o is not None]

    async def run() -> SyncResult:
        with _progress(console, settings.name, enabled=not quiet) as shown:
            return await sync(settings, observer=fan_out(shown, *extra))

    try:
        result = _run(run)
    except MirrorError as exc:
        if not several:
            raise
        _error(console, f"job {job}: {exc}")
        return int(exc.exit_code)
    code = _report(result, console, quiet=quiet or as_json, job=job if several else None)
    if machine is not None:
        machine.summary(result, code)
    if hasattr(args, "metrics_file"):
        write_metrics(args.metrics_file, result, name=settings.name, job=job, exit_code=code)
    return code


def _run_ls(args: argparse.Namespace, console: Console) -> int:
    ref = ContentRef(args.hub, args.type, args.name, None if args.version in (None, "latest") else args.version,
                     args.accept_eula, None)
    SyncSettings(name=ref.name, dest=Path("."), hub=ref.hub, content_type=ref.content_type,
                 version=ref.version)  # the same checks as sync, before any call
    path_filter = PathFilter(tuple(args.include or ()), tuple(args.exclude or ()))
    listing = _run(functools.partial(list_content, ref, _aws(args), path_filter, probe_sizes=args.sizes))
    if args.json:
        print(json.dumps({"version": listing.version, "files": [{"path": p, "size": s} for p, s in listing.files],
                          "refused": listing.refused}))
        return ExitCode.UNSAFE_CONTENT if listing.refused else ExitCode.OK
    for path, size in listing.files:
        print(f"{'' if size is None else size:>14}  {path}")
    total = sum(s for _, s in listing.files if s is not None)
    print(f"{len(listing.files)} files" + (f", {format_size(total)}" if args.sizes else "") +
          f" in {ref.name} {listing.version or '(latest)'}", file=sys.stderr)
    for reason in listing.refused.values():
        _error(console, reason)
    return ExitCode.UNSAFE_CONTENT if listing.refused else ExitCode.OK


def _run_verify(args: argparse.Namespace, console: Console) -> int:
    report = _run(functools.partial(verify, args.dest))
    for path in report.missing:
        print(f"missing {path}")
    for path, problem in sorted(report.differs.items()):
        print(f"differs {path}: {problem}")
    for path in report.extra:
        print(f"extra   {path}")
    if report.ok:
        print(f"verified {report.checked} files: all match the manifest")
        return ExitCode.OK
    print(f"checked {report.checked} files: {len(report.differs)} differ, {len(report.missing)} missing, "
          f"{len(report.extra)} extra")
    return ExitCode.VERIFY_FAILED


def _run_studio_url(args: argparse.Namespace, console: Console) -> int:
    from .hub import HubClient

    settings = StudioUrlSettings(domain_id=args.domain_id, user_profile=args.user_profile, space=args.space,
                                 expires_in=args.expires_in, session_expiration=args.session_expiration,
                                 landing_uri=args.landing_uri, aws=_aws(args))

    async def studio_url() -> str:
        async with HubClient.open(settings.aws) as hub:
            return await hub.studio_url(settings)

    print(_run(studio_url))
    return ExitCode.OK


def _run_emulator(args: argparse.Namespace, console: Console) -> int:
    from .emulator import Emulator, EmulatorSettings

    settings = EmulatorSettings(
        root=args.root, host=args.host, port=args.port, url_ttl=args.url_ttl,
        conn_rate=parse_size(args.conn_rate, key="--conn-rate") if args.conn_rate else None,
        latency=args.latency / 1000, page_delay=args.page_delay,
        part_size=parse_size(args.part_size, key="--part-size"), seed=args.seed, faults=_faults(args.fault),
        fault_budget=args.fault_budget, stall=args.stall, checksum=args.checksum,
        tls_cert=args.tls_cert, tls_key=args.tls_key)
    if not args.root.is_dir():
        raise UsageError(f"--root {args.root}: not a directory")

    async def serve() -> None:
        # listen for signals before announcing the endpoint: whoever reads it may stop us at once
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with Emulator(settings) as emulator:
                print(f"endpoint {emulator.endpoint}", flush=True)
                async for _ in signals:
                    return

    anyio.run(serve)  # the plain asyncio loop: uvloop has no sendfile, asyncio's uses os.sendfile
    return ExitCode.OK


def _faults(specs: list[str]) -> dict[str, float]:
    from .emulator.server import FAULTS

    faults = {}
    for spec in specs:
        name, _, rate = spec.partition("=")
        if name not in FAULTS:
            raise UsageError(f"--fault {spec!r}: unknown fault; known: {', '.join(FAULTS)}")
        try:
            faults[name] = float(rate)
        except ValueError:
            raise UsageError(f"--fault {spec!r}: expected NAME=RATE with RATE from 0 to 1") from None
        if not 0 <= faults[name] <= 1:
            raise UsageError(f"--fault {spec!r}: RATE must be from 0 to 1")
    return faults


def _run_demo(args: argparse.Namespace, console: Console) -> int:
    from .demo import run_demo

    async def run() -> Any:
        with _progress(console, "demo") as observer:
            return await run_demo(args.dest, observer=observer)

    outcome = _run(run)
    code = _report(outcome.result, console)
    if outcome.mismatched:
        _error(console, f"byte check failed for {', '.join(outcome.mismatched)}")
        return ExitCode.TRANSFER_FAILED
    print(f"checked {len(outcome.result.completed)} files byte for byte against the emulator's source: "
          f"all identical. They are in {outcome.result.dest}")
    return code


# --- shared pieces ---------------------------------------------------------------------------


def _aws(args: argparse.Namespace) -> AwsSettings:
    return build_aws_settings({k: getattr(args, k, None) for k in ("region", "profile", "endpoint_url", "api_timeout", "api_attempts", "ca_bundle")})


def _run(function: Callable[[], Any]) -> Any:
    return anyio.run(_until_signal, function, backend_options=loop_options())


async def _until_signal(function: Callable[[], Any]) -> Any:
    """Run `function`; SIGINT or SIGTERM cancels it cleanly and raises `Interrupted`."""
    received: list[int] = []
    result: Any = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    received.append(signum)
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch)
        try:
            result = await function()
        finally:
            group.cancel_scope.cancel()
    if received:
        raise Interrupted(received[0])
    return result


def _progress(console: Console, title: str, *, enabled: bool = True) -> ContextManager[events.Observer]:
    """A rich display on a terminal; nothing at all otherwise (logs stay clean)."""
    if not console.is_terminal or not enabled:
        return contextlib.nullcontext(events.ignore)
    from .progress import RichProgress

    return RichProgress(title, console)


def _report(result: SyncResult, console: Console, *, quiet: bool = False, job: str | None = None) -> int:
    """The summary line on stdout (unless quiet), problems on stderr; the exit code."""
    code = _exit_code(result)
    if not quiet:
        _print_summary(result, console, job)
    return code


def _exit_code(result: SyncResult) -> int:
    if result.refused:
        return ExitCode.UNSAFE_CONTENT
    return ExitCode.TRANSFER_FAILED if result.failed else ExitCode.OK


def _print_summary(result: SyncResult, console: Console, job: str | None) -> None:
    if result.planned:
        for path, action in sorted(result.planned.items()):
            print(f"{action:8} {path}")
        counts = collections.Counter(result.planned.values())
        print("dry run: " + ", ".join(f"{n} to {a}" for a, n in sorted(counts.items())) + "; nothing changed")
    rate = result.bytes_downloaded / result.elapsed if result.elapsed > 0 else 0.0
    fetched = len(result.completed) - len(result.skipped)
    notes = [f"{len(result.skipped)} unchanged" if result.skipped else "",
             f"{len(result.unverified)} unverified" if result.unverified else "",
             f"{len(result.failed) + len(result.refused)} failed" if not result.ok else "",
             f"{len(result.deleted)} deleted" if result.deleted else "",
             f"{len(result.extra)} extra kept" if result.extra and not result.deleted else ""]
    noted = ", ".join(n for n in notes if n)
    prefix = f"job {job}: " if job else ""
    version = f" {result.version}" if result.version else ""
    if not result.planned:
        print(f"{prefix}mirrored {fetched} files{version and f' of{version}'}, {format_size(result.bytes_downloaded)} "
              f"in {result.elapsed:.1f} s ({format_size(rate)}/s){f'; {noted}' if noted else ''} into {result.dest}")
    for path, reason in {**result.refused, **result.failed}.items():
        console.print(f"mirror: {path}: {presign.scrub(reason)}", markup=False, highlight=False)
    for path, reason in result.unverified.items():
        console.print(f"mirror: {path}: unverified: {reason}", markup=False, highlight=False)
    for path in [] if result.deleted or result.planned else result.extra:
        console.print(f"mirror: {path}: no longer listed; kept (use --delete to remove)", markup=False,
                      highlight=False)
    if result.prewarmed_bytes:
        print(f"prewarmed {format_size(result.prewarmed_bytes)} into the page cache")


def main(argv: Sequence[str] | None = None) -> int:
    console = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args, console))
    except MirrorError as exc:
        _error(console, str(exc))
        return int(exc.exit_code)
    except ExceptionGroup as group:  # a task group's failure: show the first real error
        first = _first_leaf(group)
        _error(console, str(first) if isinstance(first, MirrorError) else f"internal error: {first!r}")
        return int(first.exit_code) if isinstance(first, MirrorError) else ExitCode.INTERNAL
    except KeyboardInterrupt:
        _error(console, "interrupted")
        return ExitCode.INTERRUPTED


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _error(console: Console, message: str) -> None:
    console.print(f"mirror: error: {presign.scrub(message)}", markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
