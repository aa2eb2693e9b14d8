#!/usr/bin/env python3
"""The pre-migration check as Nova would call it, against the demo's hosts.

    make demo KEEP=1
    .venv/bin/python examples/nova_precheck.py vm10     # refused, with the reason
    .venv/bin/python examples/nova_precheck.py vm11     # allowed
    make demo-stop

In Nova this belongs in check_can_live_migrate_source/destination: the source's
port, the source host's registry, the destination host's registry.
"""

import sys
from pathlib import Path

from vucompat.api import Client, VucompatError

RUN = Path(__file__).resolve().parent.parent / "run" / "demo"
SOURCE = f"unix:{RUN / 'compute-new' / 'db.sock'}"
DESTINATION = f"unix:{RUN / 'compute-old' / 'db.sock'}"


class MigrationPreCheckError(Exception):
    """What Nova raises to refuse a live migration."""


def check_can_live_migrate(port: str, source: str = SOURCE, destination: str = DESTINATION) -> None:
    with Client(timeout=5.0) as client:
        verdict = client.check_migration(port, source, destination)
    if not verdict.allowed:
        # the reasons are structured (kind, name, source value, destination value) for logs and APIs
        raise MigrationPreCheckError(f"port {port}: {verdict.sentence}")
    print(f"port {port}: allowed ({verdict.level}): {verdict.sentence}")


if __name__ == "__main__":
    try:
        check_can_live_migrate(sys.argv[1] if len(sys.argv) > 1 else "vm11")
    except MigrationPreCheckError as err:
        print(f"refused: {err}")
        sys.exit(1)
    except VucompatError as err:  # a host cannot be reached, an unknown port: an error, not a verdict
        print(f"error: {err}")
        sys.exit(2)
