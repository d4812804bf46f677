"""How each tool is run on a corpus: one command line per tool, output under `dest`.

Every tool gets the same presigned URLs (listed once through the real SageMaker client,
with a long URL lifetime so no peer has to renew), the same connection budget, and the
same loopback emulator.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CONNECTIONS = 16
Entry = tuple[str, str]  # (relative path, presigned URL)


@dataclass(frozen=True)
class Tool:
    name: str
    available: Callable[[], str | None]  # None when usable, else why not
    command: Callable[[str, str, list[Entry], Path, Path, int], list[str]]
    # (endpoint, content name, entries, dest, scratch dir, connections) -> argv


def _have(program: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(program) else f"{program} not installed"


def _have_module(module: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            __import__(module)
        except ImportError:
            return f"python module {module} not installed (pip install hf-transfer)"
        return None
    return check


def mirror_command(endpoint: str, name: str, entries: list[Entry], dest: Path, scratch: Path,
                   connections: int) -> list[str]:
    return [sys.executable, "-m", "mirror", "sync", name, "--dest", str(dest), "--endpoint-url", endpoint,
            "--concurrency", str(connections)]


def aria2c_command(endpoint: str, name: str, entries: list[Entry], dest: Path, scratch: Path,
                   connections: int) -> list[str]:
    listing = scratch / "aria2c-input.txt"
    listing.write_text("".join(f"{url}\n  out={path}\n" for path, url in entries))
    return ["aria2c", f"-x{connections}", f"-s{connections}", f"-j{connections}", "-k8M", "-i", str(listing),
            "-d", str(dest), "--file-allocation=falloc", "--allow-overwrite=true", "--auto-file-renaming=false",
            "--console-log-level=error", "--summary-interval=0", "--download-result=hide", "--quiet=true"]


_HF_DRIVER = textwrap.dedent("""
    import json, os, sys
    from hf_transfer import download
    entries, dest, connections = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
    for path, url in entries:  # one file at a time, as huggingface_hub drives it
        target = os.path.join(dest, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        download(url, target, max_files=connections, chunk_size=10 * 1024 * 1024)
""")


def hf_transfer_command(endpoint: str, name: str, entries: list[Entry], dest: Path, scratch: Path,
                        connections: int) -> list[str]:
    listing = scratch / "hf-input.json"
    listing.write_text(json.dumps(entries))
    return [sys.executable, "-c", _HF_DRIVER, str(listing), str(dest), str(connections)]


def curl_command(endpoint: str, name: str, entries: list[Entry], dest: Path, scratch: Path,
                 connections: int) -> list[str]:
    config = scratch / "curl.cfg"
    config.write_text("".join(f'url = "{url}"\noutput = "{dest / path}"\n' for path, url in entries))
    return ["curl", "--silent", "--show-error", "--fail", "--create-dirs", "--parallel",
            "--parallel-max", str(connections), "--config", str(config)]


def curl_read_floor_command(endpoint: str, name: str, entries: list[Entry], dest: Path, scratch: Path,
                            connections: int) -> list[str]:
    """Read every byte from the emulator into /dev/null: the network side of the floor."""
    config = scratch / "curl-null.cfg"
    config.write_text("".join(f'url = "{url}"\noutput = "/dev/null"\n' for _, url in entries))
    return ["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-max", str(connections),
            "--config", str(config)]


TOOLS = {
    "mirror": Tool("mirror", lambda: None, mirror_command),
    "aria2c": Tool("aria2c", _have("aria2c"), aria2c_command),
    "hf_transfer": Tool("hf_transfer", _have_module("hf_transfer"), hf_transfer_command),
    "curl": Tool("curl", _have("curl"), curl_command),
}
READ_FLOOR = Tool("read floor (curl > /dev/null)", _have("curl"), curl_read_floor_command)
