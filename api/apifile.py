"""Where the API's address and token live: `<workspace>/.clutch/api.json`, and its constants.

Pure values and a path helper; no threads, no state.
"""
from __future__ import annotations

import os
from pathlib import Path

HOST = "127.0.0.1"
API_FILE = "api.json"


def api_file_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / ".clutch" / API_FILE
