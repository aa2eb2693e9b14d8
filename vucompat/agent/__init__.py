"""The host's daemons: the port agent and the relay process."""

import importlib.metadata

try:
    #: the installed vucompat the daemons run (None: not installed as a package)
    VERSION: str | None = importlib.metadata.version("vucompat")
except importlib.metadata.PackageNotFoundError:
    VERSION = None
