"""The bundled offline snapshot of the registry (the demo and `sync_registry --snapshot`).

A copy of the 247-version / 121-name subset in ../shared/registry/pages, merged into one
ServerList, so a fresh clone works with no network.
"""

import json
from pathlib import Path
from typing import Any

BUNDLED_SNAPSHOT = Path(__file__).resolve().parent / "fixtures" / "registry_snapshot.json"


def load_server_list(path: str | Path) -> list[Any]:
    """The `servers` array of a ServerList JSON file (a page, a scenario, a snapshot)."""
    body = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(body, dict) or not isinstance(body.get("servers"), list):
        raise ValueError(f"{path}: not a ServerList (no 'servers' array)")
    servers: list[Any] = body["servers"]
    return servers
