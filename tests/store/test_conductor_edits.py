"""The store's edits in place and the forms it reads, one rule per test: checkpoints, SHA forms,
plan-order dependencies, manual-verification tasks, registry forms, metadata.json, no new files
in an existing project."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conductor_store import ConductorStore, StoreError
from models import Ticket, Track

TID = "demo_20260101"


def project(root: Path, plan: str, registry: str | None = None, meta: str | None = None) -> ConductorStore:
    folder = root / "conductor" / "tracks" / TID
    folder.mkdir(parents=True)
    (folder / "plan.md").write_text(plan)
    if registry is not None:
        (root / "conductor" / "tracks.md").write_text(registry)
    if meta is not None:
        (folder / "metadata.json").write_text(meta)
    return ConductorStore(root)


PLAN = ("# Implementation Plan: Demo\n\n"
        "## Phase 0: Setup\n"
        "- [x] Task: Scaffold (a1b2c3d)\n"
        "- [ ] Task: Conductor - User Manual Verification 'Phase 0: Setup' (Protocol in workflow.md)\n\n"
        "## Phase 1: Build\n"
        "- [ ] Task: Write the parser\n"
        "  - [ ] Sub-task: tokens\n"
        "- [ ] Task: Conductor - User Manual Verification 'Build' (Protocol in workflow.md)\n")
REG = ("# Project Tracks\n\n---\n\n- [ ] **Track: Add a demo endpoint for users**\n"
       f"*Link: [./tracks/{TID}/](./tracks/{TID}/)*\n")


def test_manual_verification_is_a_checkpoint_and_plan_order_is_the_default(tmp_path: Path):
    store = project(tmp_path, PLAN, REG)
    track, problems = store.load_track(TID)
    assert problems == []
    got = [(k.id, k.checkpoint, k.depends_on, k.phase, k.commit_sha) for k in track.tickets]
    assert got == [("D-1", False, [], "Setup", "a1b2c3d"),
                   ("D-2", True, ["D-1"], "Setup", ""),
                   ("D-3", False, ["D-2"], "Build", ""),      # waits for Phase 0's checkpoint
                   ("D-4", True, ["D-3"], "Build", "")]
    assert track.tickets[2].description == "Write the parser\n- [ ] Sub-task: tokens"
    # the dependencies Clutch adds live in state.toml, and the person may change them there
    track.tickets[2].depends_on = []
    store.save_track(track)
    assert "depends" not in (store.tracks_dir / TID / "plan.md").read_text()
    again, _ = store.load_track(TID)
    assert again.tickets[2].depends_on == []


def test_checkpoint_phase_appends_the_tag_and_the_tick_uses_the_plans_form(tmp_path: Path):
    store = project(tmp_path, PLAN, REG)
    track, _ = store.load_track(TID)
    cp = track.tickets[1]
    cp.status, cp.commit_sha = "completed", "0f0f0f0f0f0f0f0f"
    store.save_track(track)
    assert store.checkpoint_phase(TID, "Setup", "0f0f0f0f0f0f0f0f") is True
    assert store.checkpoint_phase(TID, "Phase 0: Setup", "0f0f0f0") is False   # already tagged
    text = (store.tracks_dir / TID / "plan.md").read_text()
    assert text == PLAN.replace("## Phase 0: Setup\n", "## Phase 0: Setup [checkpoint: 0f0f0f0]\n").replace(
        "- [ ] Task: Conductor - User Manual Verification 'Phase 0: Setup' (Protocol in workflow.md)",
        "- [x] Task: Conductor - User Manual Verification 'Phase 0: Setup' (Protocol in workflow.md) (0f0f0f0)")
    assert store.phase_checkpoints(TID) == {"Setup": "0f0f0f0", "Build": ""}
    with pytest.raises(StoreError, match="no phase 'Deploy'.*'Setup', 'Build'"):
        store.checkpoint_phase(TID, "Deploy", "0f0f0f0")
    with pytest.raises(StoreError, match="not a commit SHA"):
        store.checkpoint_phase(TID, "Build", "nope")


@pytest.mark.parametrize("line, sha", [
    ("- [x] Task: A c639fe4", "c639fe4"),
    ("- [x] Task: A [c639fe4]", "c639fe4"),
    ("- [x] Task: A (c639fe4)", "c639fe4"),
    ("- [x] Task: A `c639fe4`", "c639fe4"),
    ("- [x] Task: A 8821086 (80% Coverage)", "8821086"),
    ("- [x] **Task: A** abcdef1", "abcdef1"),
    ("- [ ] Task: A 1234567", ""),            # an open task's text may end in a number
])
def test_shas_are_read_in_every_form(tmp_path: Path, line: str, sha: str):
    store = project(tmp_path, f"# Plan: X\n\n## Phase 1: P\n{line}\n")
    track, _ = store.load_track(TID)
    assert track.tickets[0].commit_sha == sha
    assert track.tickets[0].description in ("A", "A (80% Coverage)", "A 1234567")


def test_registry_status_wins_and_its_description_is_never_rewritten(tmp_path: Path):
    meta = ('{\n  "track_id": "demo_20260101",\n  "type": "feature",\n  "status": "new",\n'
            '  "description": "Add a demo endpoint for users",\n  "extra": [1, 2]\n}')
    store = project(tmp_path, PLAN, REG.replace("[ ] **Track", "[x] **Track"), meta)
    track, _ = store.load_track(TID)
    assert track.status == "completed"                     # metadata.json says new: stale
    track.title = "Demo"                                   # the spec's title, say
    track.status = "in_progress"
    store.save_track(track)
    reg = store.registry_path.read_text()
    assert reg == REG.replace("[ ] **Track", "[~] **Track")
    saved = (store.tracks_dir / TID / "metadata.json").read_text()
    assert saved == meta.replace('"status": "new"', '"status": "in_progress"')
    assert list(json.loads(saved)) == ["track_id", "type", "status", "description", "extra"]


@pytest.mark.parametrize("registry, status", [
    (f"## [~] Track: Demo\nLink: [{TID}](./tracks/{TID}/)\n", "in_progress"),
    (f"## [x] Track: Demo\n*Link: [./conductor/tracks/{TID}/](./conductor/tracks/{TID}/)*\n", "completed"),
    (f"- [~] **Track: Demo**\n  *Link: [./tracks/{TID}/](./tracks/{TID}/)*\n", "in_progress"),
    (f"| Status | Track ID |\n| --- | --- |\n| [x] | [{TID}](./tracks/{TID}/index.md) |\n", "completed"),
])
def test_every_registry_form_gives_the_status(tmp_path: Path, registry: str, status: str):
    store = project(tmp_path, PLAN, "# Project Tracks\n\n" + registry)
    track, _ = store.load_track(TID)
    assert track.status == status
    before = store.registry_path.read_text()
    track.status = "new"
    store.save_track(track)
    after = store.registry_path.read_text()
    assert [(a, b) for a, b in zip(before.split("\n"), after.split("\n")) if a != b] == [
        (x, x.replace("[~]", "[ ]", 1).replace("[x]", "[ ]", 1))
        for x in before.split("\n") if "[~]" in x or "[x]" in x]


def test_archives_and_folders_without_a_plan_are_not_tracks(tmp_path: Path):
    store = project(tmp_path, PLAN, REG + f"\n---\n\n- [ ] **Track: Gone**\n*Link: [./tracks/gone_1/](./tracks/gone_1/)*\n")
    for extra in ("_archive/old_1", "notes_only"):
        d = store.tracks_dir / extra
        d.mkdir(parents=True)
        (d / "spec.md").write_text("# x\n")
    (store.tracks_dir / "_archive/old_1/plan.md").write_text("- [ ] Task: old\n")
    (store.conductor_dir / "archive" / "done_1").mkdir(parents=True)
    (store.conductor_dir / "archive" / "done_1" / "plan.md").write_text("- [x] Task: done\n")
    tracks, problems = store.load_tracks()
    assert [t.id for t in tracks] == [TID]
    assert len(problems) == 1 and "gone_1" in problems[0].message and problems[0].line == 10


def test_no_file_the_extension_would_read_differently_in_an_existing_project(tmp_path: Path):
    store = project(tmp_path, PLAN, REG)
    (store.conductor_dir / "product.md").write_text("# P\n")
    store.ensure_layout()
    track, _ = store.load_track(TID)
    track.tickets[2].status = "in_progress"
    store.save_track(track)
    names = sorted(p.name for p in store.conductor_dir.rglob("*") if p.is_file())
    assert names == ["plan.md", "product.md", "state.toml", "tracks.md"]


def test_a_new_project_and_a_track_clutch_creates_follow_the_templates(tmp_path: Path):
    store = ConductorStore(tmp_path)
    store.ensure_layout()
    assert (store.conductor_dir / "index.md").exists()
    track = Track(id="demo_20260102", title="Demo endpoint", goal="Say hi.",
                  acceptance_criteria=["GET /hi says hi"], created_at="2026-01-02T00:00:00Z",
                  updated_at="2026-01-02T00:00:00Z",
                  tickets=[Ticket(id="T-1", description="Route", phase="Server"),
                           Ticket(id="T-2", description="Docs", phase="Docs", depends_on=["T-1"])])
    store.create_track(track)
    folder = store.tracks_dir / track.id
    assert (folder / "plan.md").read_text() == (
        "# Implementation Plan: Demo endpoint\n\n## Phase 1: Server\n- [ ] Task: Route\n\n"
        "## Phase 2: Docs\n- [ ] Task: Docs\n")
    assert json.loads((folder / "metadata.json").read_text()) == {
        "track_id": "demo_20260102", "type": "feature", "status": "new",
        "created_at": "2026-01-02T00:00:00Z", "updated_at": "2026-01-02T00:00:00Z",
        "description": "Demo endpoint"}
    assert (folder / "index.md").read_text().startswith("# Track demo_20260102 Context\n\n- [Specification](./spec.md)")
    assert store.registry_path.read_text().endswith(
        "\n---\n\n- [ ] **Track: Demo endpoint**\n*Link: [./tracks/demo_20260102/](./tracks/demo_20260102/)*\n")
    loaded, problems = store.load_track(track.id)
    assert problems == [] and [k.id for k in loaded.tickets] == ["T-1", "T-2"]


def test_crlf_bom_and_no_final_newline_survive_a_tick(tmp_path: Path):
    plan = "\ufeff# Plan: X\r\n\r\n## Phase 1: P\r\n- [ ] Task: One  \r\n- [ ] Task: Two"
    folder = tmp_path / "conductor" / "tracks" / TID
    folder.mkdir(parents=True)
    (folder / "plan.md").write_bytes(plan.encode("utf-8"))
    store = ConductorStore(tmp_path)
    track, _ = store.load_track(TID)
    track.tickets[1].status, track.tickets[1].commit_sha = "completed", "1234567abc"
    store.save_track(track)
    assert (folder / "plan.md").read_bytes() == plan.replace("- [ ] Task: Two", "- [x] Task: Two 1234567").encode()
    track.tickets[0].status, track.tickets[0].commit_sha = "completed", "89abcde"
    store.save_track(track)
    assert (folder / "plan.md").read_bytes() == plan.replace("- [ ] Task: Two", "- [x] Task: Two 1234567").replace(
        "- [ ] Task: One  \r", "- [x] Task: One 89abcde  \r").encode()


@pytest.mark.parametrize("form", ["{}", "[{}]", "({})", "`{}`"])
def test_a_reverted_task_loses_its_marker_and_sha_and_nothing_else(tmp_path: Path, form: str):
    plan = f"# Plan: X\n\n## Phase 1: P\n- [x] Task: One {form.format('abc1234')}\n- [ ] Task: Two\n"
    store = project(tmp_path, plan)
    track, _ = store.load_track(TID)
    assert track.tickets[0].commit_sha == "abc1234"
    track.tickets[0].status, track.tickets[0].commit_sha = "todo", ""
    store.save_track(track)
    assert (store.tracks_dir / TID / "plan.md").read_text() == (
        "# Plan: X\n\n## Phase 1: P\n- [ ] Task: One\n- [ ] Task: Two\n")
    again, _ = store.load_track(TID)
    assert again.tickets[0].status == "todo" and again.tickets[0].commit_sha == ""


def test_a_ticket_removed_in_the_app_loses_its_line_a_task_added_by_hand_keeps_it(tmp_path: Path):
    store = project(tmp_path, PLAN, REG)
    track, _ = store.load_track(TID)
    store.save_track(track)                                   # state.toml now knows D-1..D-4
    path = store.tracks_dir / TID / "plan.md"
    # meanwhile someone adds a task to the file by hand; the app removes D-3 from its copy
    path.write_text(path.read_text().replace("- [ ] Task: Conductor - User Manual Verification 'Build'",
                                             "- [ ] Task: Added by hand\n- [ ] Task: Conductor - User Manual Verification 'Build'"))
    track.tickets = [k for k in track.tickets if k.id != "D-3"]
    store.save_track(track)
    text = path.read_text()
    assert "Write the parser" not in text and "Sub-task: tokens" not in text
    assert "- [ ] Task: Added by hand\n" in text
    again, _ = store.load_track(TID)
    assert [k.description for k in again.tickets][:3] == [
        "Scaffold", "Conductor - User Manual Verification 'Phase 0: Setup' (Protocol in workflow.md)",
        "Added by hand"]


def test_metadata_status_stays_when_only_the_time_moves(tmp_path: Path):
    meta = '{"id": "x", "status": "pending", "updated_at": "2026-01-01T00:00:00Z", "phases": {"status": "n"}}'
    store = project(tmp_path, PLAN, REG, meta)
    track, _ = store.load_track(TID)
    track.updated_at = "2026-02-02T00:00:00Z"
    store.save_track(track)
    assert (store.tracks_dir / TID / "metadata.json").read_text() == meta.replace("2026-01-01", "2026-02-02")
    track.status = "completed"
    store.save_track(track)
    assert (store.tracks_dir / TID / "metadata.json").read_text() == meta.replace(
        "2026-01-01", "2026-02-02").replace('"pending"', '"completed"')


def test_ticked_sub_tasks_keep_their_indentation(tmp_path: Path):
    plan = ("# Plan: X\n\n## Phase 1: P\n- [ ] Task: One\n  - [ ] Sub-task: a  \n\n\t- [ ] Sub-task: b\n"
            "  - [ ] Note: keep\n- [ ] Task: Two\n")
    store = project(tmp_path, plan)
    track, _ = store.load_track(TID)
    one = track.tickets[0]
    assert one.description == "One\n- [ ] Sub-task: a\n\n  - [ ] Sub-task: b\n- [ ] Note: keep"   # a tab is 4
    one.status, one.commit_sha = "completed", "abcdef1"
    one.description = one.description.replace("[ ] Sub-task", "[x] Sub-task")   # as the engine does
    store.save_track(track)
    assert (store.tracks_dir / TID / "plan.md").read_text() == (
        "# Plan: X\n\n## Phase 1: P\n- [x] Task: One abcdef1\n  - [x] Sub-task: a  \n\n\t- [x] Sub-task: b\n"
        "  - [ ] Note: keep\n- [ ] Task: Two\n")
    again, _ = store.load_track(TID)
    assert again.tickets[0].description == one.description and again.tickets == track.tickets
