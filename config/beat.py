"""Celery beat with a heartbeat, so a healthcheck can tell a live beat from a hung or dead one.

A beat that has stopped ticking looks healthy to anything that only checks the process or its
schedule file (the file is rewritten every few minutes at best). This scheduler touches
`<schedule file>.heartbeat` after every tick and ticks at least every HEARTBEAT_SECONDS, so the
file's age says when the loop last ran; `python -m config.beat check <schedule file>` turns
that into an exit code for docker-compose's healthcheck. It does not check the broker: a tick
whose send fails is logged by beat and still counts (Redis has its own healthcheck).

Run beat with `--scheduler config.beat:HeartbeatScheduler --schedule <file>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

# Beat sleeps until the next task is due, up to its max loop interval (300 s by default):
# cap the sleep so the heartbeat stays fresh whatever the schedule holds.
HEARTBEAT_SECONDS = 5.0
DEFAULT_MAX_AGE_SECONDS = 60.0


def heartbeat_path(schedule_filename: str | Path) -> Path:
    return Path(f"{schedule_filename}.heartbeat")


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]  # celery is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_interval: float = min(float(self.max_interval), HEARTBEAT_SECONDS)
        self.heartbeat = heartbeat_path(self.schedule_filename)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = float(super().tick(*args, **kwargs))
        self.heartbeat.touch()
        return min(interval, HEARTBEAT_SECONDS)


def heartbeat_age(schedule_filename: str | Path) -> float | None:
    """Seconds since beat last ticked, or None when it never has."""
    try:
        return time.time() - heartbeat_path(schedule_filename).stat().st_mtime
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.beat")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="exit 0 when beat ticked within --max-age seconds")
    check.add_argument("schedule", help="the --schedule file beat runs with")
    check.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_SECONDS)
    args = parser.parse_args(argv)
    age = heartbeat_age(args.schedule)
    if age is None:
        sys.stderr.write("beat has not ticked yet (no heartbeat file)\n")
        return 1
    if age > args.max_age:
        sys.stderr.write(f"beat last ticked {age:.0f} s ago (limit {args.max_age:.0f} s)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
