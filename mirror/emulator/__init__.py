"""A local SageMaker + S3 emulator on a real loopback HTTP server.

    async with Emulator(EmulatorSettings(root=path)) as emu:
        emu.endpoint   # "http://127.0.0.1:PORT", for --endpoint-url
"""

from .content import write_synthetic
from .server import Emulator, EmulatorSettings

__all__ = ["Emulator", "EmulatorSettings", "write_synthetic"]
