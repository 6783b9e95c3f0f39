"""`clutch tracks --json` on real Conductor projects: every track, with the registry's status."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_conductor_samples import NAMES, SAMPLES, independent

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", NAMES)
def test_tracks_json_shows_every_track_with_the_registry_status(tmp_path: Path, name: str):
    ws = tmp_path / name
    shutil.copytree(SAMPLES / name, ws)
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), "tracks", "--workspace", str(ws),
                        "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    want = independent(ws)
    assert {t["id"]: t["status"] for t in out["tracks"]} == {k: v[0] for k, v in want.items()}
    for t in out["tracks"]:
        assert [k["status"] for k in t["tickets"]] == [s for s, _ in want[t["id"]][1]]
    if name == "ParrotInk":     # registry entries whose folder is missing are reported
        assert sum("startup_toast_20260217" in x or "stats_page_20260217" in x
                   for x in out["problems"]) == 2
