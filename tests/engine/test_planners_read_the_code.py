"""Plans that know the code (issue 19): Tier 1 and Tier 2 see the repository map, so on a
small real-looking repository the offline planner targets the file the epic names and its
worker edits it in place, and a real provider's requests carry the repository's symbols."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from ai_client import FunctionProvider, ModelRequest, ModelResponse
from models import EpicPlan, TrackPlan, TrackProposal

EPIC = "Add multiply(a, b) to util.py with a test in tests/test_util.py"


def small_repo(ws: Path) -> None:
    (ws / "util.py").write_text('"""Small helpers."""\n\n\ndef add(a, b):\n    return a + b\n\n\n'
                                'def scale_vector(v, k):\n    return [x * k for x in v]\n')
    (ws / "app.py").write_text("from util import add, scale_vector\n\n\n"
                               "def main():\n    print(add(1, 2), scale_vector([1, 2], 3))\n")
    (ws / "tests").mkdir()
    (ws / "tests" / "test_util.py").write_text("from util import add\n\n\n"
                                               "def test_add():\n    assert add(2, 3) == 5\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True)


def test_the_offline_planner_edits_the_file_the_epic_names(make_engine, workspace):
    small_repo(workspace)
    before = sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*")
                    if p.is_dir() and ".git" not in p.parts and ".clutch" not in p.parts)
    eng = make_engine(git_commits=True)
    plan = eng.plan_epic(EPIC).result(60)
    tracks = eng.accept_tracks(plan.tracks).result(30)
    targets = []
    for t in tracks:
        planned = eng.plan_track(t.id).result(60)
        targets += [f for k in planned.tickets for f in k.target_files]
        done = eng.start_track(t.id).result(120)
        assert all(k.status == "completed" for k in done.tickets), \
            [(k.id, k.status, k.blocked_reason) for k in done.tickets]
    assert "util.py" in targets
    spec = importlib.util.spec_from_file_location("util_under_test", workspace / "util.py")
    util = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(util)
    assert util.multiply(6, 7) == 42 and util.add(2, 3) == 5 and util.scale_vector([1], 2) == [2]
    eng.settle()              # the tracks' worktrees are removed just after they report
    after = sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*")
                   if p.is_dir() and ".git" not in p.parts and ".clutch" not in p.parts
                   and "__pycache__" not in p.parts and "conductor" not in p.parts)
    assert [d for d in after if d not in before] == []      # no package made up from the epic
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_util.py"], cwd=workspace, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_tier1_and_tier2_requests_carry_the_repositorys_symbols(make_engine, workspace):
    small_repo(workspace)
    seen: list[ModelRequest] = []

    def fn(req: ModelRequest):
        seen.append(req)
        if req.tier == "Tier 1":
            return ModelResponse(text=EpicPlan(tracks=[TrackProposal(
                title="Multiply", goal="g", acceptance_criteria=["c"])]).model_dump_json())
        return ModelResponse(text=TrackPlan.model_validate({"tickets": [
            {"id": "T-001", "description": "add multiply", "target_files": ["util.py"]}]})
            .model_dump_json())
    eng = make_engine(provider=FunctionProvider(fn))
    plan = eng.plan_epic(EPIC).result(60)
    [t] = eng.accept_tracks(plan.tracks).result(30)
    eng.plan_track(t.id).result(60)
    texts = {r.tier: (r.system or "") + "\n".join(m.text for m in r.messages) for r in seen}
    for tier in ("Tier 1", "Tier 2"):
        assert "scale_vector" in texts[tier] and "util.py" in texts[tier], tier
