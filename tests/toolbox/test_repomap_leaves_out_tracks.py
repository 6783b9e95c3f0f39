"""The repository map covers the code and the project's documents, not Conductor's track state
(plans, specs, metadata, state.toml and the temp files of a save in progress): those change on
every tick and would make two identical requests differ (issue 19)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from toolbox.repomap import list_files


@pytest.mark.parametrize("git", [True, False])
def test_track_state_is_not_mapped_but_the_documents_are(tmp_path: Path, git: bool):
    files = ["app.py", "conductor/product.md", "conductor/workflow.md", "conductor/tracks.md",
             "conductor/tracks/t_1/plan.md", "conductor/tracks/t_1/metadata.json",
             "conductor/tracks/t_1/.state.toml.x1.tmp", "conductor/archive/t_0/plan.md",
             "src/conductor/tracks.py"]
    for rel in files:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x = 1\n")
    if git:
        subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
        subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    assert sorted(list_files(tmp_path)) == ["app.py", "conductor/product.md",
                                            "conductor/workflow.md", "src/conductor/tracks.py"]
