"""conductor_store: the Conductor-format track folders, state.toml reconciliation, settings."""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from conductor_store import ConductorStore, LoadProblem, StoreError, TrackExistsError
from models import Ticket, Track

FIXTURE = Path(__file__).parent.parent / "fixtures" / "conductor_project"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def make_track(track_id: str = "health_endpoint_20261124") -> Track:
    return Track(
        id=track_id,
        title="Health endpoint",
        goal="Expose GET /health so the load balancer can tell a live instance.\n"
             "It must not touch the database.",
        acceptance_criteria=["GET /health returns 200 and {\"ok\": true}",
                             "The endpoint is documented in the README"],
        status="in_progress",
        type="feature",
        created_at="2026-11-24T10:00:00Z",
        updated_at="2026-11-24T10:00:00Z",
        tickets=[
            Ticket(id="T-001", description="Add the route\n- [x] write the test\n- [ ] wire it",
                   status="completed", target_files=["app/routes.py"], commit_sha="a" * 40,
                   phase="Server", assigned_to="worker-1", result="route added"),
            Ticket(id="T-002", description="Return the version", status="failed",
                   depends_on=["T-001"], blocked_reason="tests failed: ImportError",
                   retry_count=2, target_files=["app/version.py"], phase="Server",
                   model_override="gemini-2.5-pro", context_requirements=["app/__init__.py"]),
            Ticket(id="setup-db", description="Skip the database check", status="skipped",
                   depends_on=["T-001"], blocked_reason="not needed", phase="Server",
                   step_mode=True),
            Ticket(id="T-004", description="Document /health", status="blocked",
                   depends_on=["T-002"], blocked_reason="depends on failed T-002",
                   target_files=["README.md"], phase="Docs"),
            Ticket(id="T-005", description="Announce it", status="todo", phase="Docs",
                   depends_on=[]),
        ],
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def copy_fixture(tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(FIXTURE, dest)
    return dest


def task_line(plan_text: str, text: str) -> str:
    """The one task line whose text starts with `text` (Clutch writes no ids into plan.md)."""
    lines = [x for x in plan_text.splitlines() if re.match(rf"- \[.\] Task: {re.escape(text)}", x)]
    assert len(lines) == 1, plan_text
    return lines[0]


@pytest.fixture
def store(tmp_path: Path) -> ConductorStore:
    return ConductorStore(tmp_path / "ws")


# ---------------------------------------------------------------------------------------------
# round trip and progress
# ---------------------------------------------------------------------------------------------

def test_round_trip_two_phases_mixed_statuses(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    loaded, problems = store.load_track(track.id)
    assert problems == []
    assert loaded == track
    assert loaded.model_dump() == track.model_dump()
    tracks, problems = store.load_tracks()
    assert problems == [] and tracks == [track]

    folder = store.tracks_dir / track.id
    for name in ("spec.md", "plan.md", "metadata.json", "index.md", "state.toml"):
        assert (folder / name).is_file(), name
    plan = (folder / "plan.md").read_text()
    assert plan.startswith("# Implementation Plan: Health endpoint\n")
    assert "## Phase 1: Server" in plan and "## Phase 2: Docs" in plan
    # the extension's form: no ids, a bare SHA, sub-lines indented 4, dependencies in state.toml
    assert task_line(plan, "Add the route") == "- [x] Task: Add the route aaaaaaa"
    assert "    - [x] write the test\n    - [ ] wire it" in plan
    assert "- [ ] Task: Skip the database check\n" in plan and "T-00" not in plan
    assert plan == ("# Implementation Plan: Health endpoint\n\n## Phase 1: Server\n"
                    "- [x] Task: Add the route aaaaaaa\n    - [x] write the test\n    - [ ] wire it\n"
                    "- [ ] Task: Return the version\n- [ ] Task: Skip the database check\n\n"
                    "## Phase 2: Docs\n- [ ] Task: Document /health\n- [ ] Task: Announce it\n")
    spec = (folder / "spec.md").read_text()
    assert spec.startswith("# Specification: Health endpoint\n")
    for heading in ("## Overview", "## Functional Requirements", "## Acceptance Criteria",
                    "## Out of Scope"):
        assert heading in spec
    assert "- The endpoint is documented in the README" in spec
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["track_id"] == track.id and meta["type"] == "feature"
    assert meta["status"] == "in_progress" and meta["created_at"] == "2026-11-24T10:00:00Z"
    assert (folder / "index.md").read_text().startswith(f"# Track {track.id} Context")
    assert "./spec.md" in (folder / "index.md").read_text()


def test_markers_metadata_and_registry_follow_progress(store: ConductorStore):
    track = Track(id="login_20261124", title="Login", goal="Log in.", status="new",
                  created_at="2026-11-24T09:00:00Z",
                  tickets=[Ticket(id="T-001", description="Form", phase="UI"),
                           Ticket(id="T-002", description="Submit", phase="UI", depends_on=["T-001"])])
    store.create_track(track)
    folder = store.tracks_dir / track.id

    def check(marker: str, suffix: str, meta_status: str, reg_marker: str) -> None:
        plan = (folder / "plan.md").read_text()
        assert task_line(plan, "Form") == f"- [{marker}] Task: Form{suffix}"
        assert task_line(plan, "Submit") == "- [ ] Task: Submit"
        assert json.loads((folder / "metadata.json").read_text())["status"] == meta_status
        reg = store.registry_path.read_text()
        assert reg.count("**Track: Login**") == 1
        assert f"- [{reg_marker}] **Track: Login**\n*Link: [./tracks/{track.id}/](./tracks/{track.id}/)*" in reg
        loaded, problems = store.load_track(track.id)
        assert problems == [] and loaded == track

    check(" ", "", "new", " ")
    track.status = "in_progress"
    track.tickets[0].status = "in_progress"
    store.save_track(track)
    check("~", "", "in_progress", "~")
    track.tickets[0].status = "completed"
    track.tickets[0].commit_sha = "abc1234def5678abc1234def5678abc1234def56"
    store.save_track(track)
    check("x", " abc1234", "in_progress", "~")
    track.status = "completed"
    store.save_track(track)
    check("x", " abc1234", "completed", "x")
    assert store.registry_path.read_text().startswith("# Project Tracks\n")


def test_new_track_id_format_and_clash(store: ConductorStore):
    day = datetime.date(2026, 11, 24)
    tid = store.new_track_id("Add a /health endpoint!", today=day)
    assert tid == "add_health_endpoint_20261124"
    long_id = store.new_track_id("Refactor the extremely complicated authentication middleware stack",
                                 today=day)
    short = long_id.rsplit("_", 1)[0]
    assert re.fullmatch(r"[a-z0-9_]+", short) and len(short) <= 30 and short.count("_") <= 3
    assert store.new_track_id("Café déjà vu", today=day) == "cafe_deja_vu_20261124"
    assert store.new_track_id("!!!", today=day) == "track_20261124"
    assert re.fullmatch(r"[a-z0-9_]+_\d{8}", store.new_track_id("Fix bug #12")), "defaults to today"

    store.create_track(Track(id=tid, title="Add a /health endpoint!"))
    tid2 = store.new_track_id("Add a /health endpoint!", today=day)
    assert tid2 == "add_health_endpoint_20261124_2"
    (store.tracks_dir / tid2).mkdir()
    assert store.new_track_id("Add a /health endpoint!", today=day) == "add_health_endpoint_20261124_3"


def test_create_track_twice_raises_and_keeps_the_first(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    folder = store.tracks_dir / track.id
    before = snapshot(folder)
    other = make_track()
    other.title = "Something else"
    with pytest.raises(TrackExistsError) as err:
        store.create_track(other)
    assert isinstance(err.value, StoreError)
    assert str(err.value) == f"track {track.id} already exists at {folder}"
    assert snapshot(folder) == before


def test_save_track_rejects_duplicate_ticket_ids(store: ConductorStore):
    track = make_track()
    track.tickets[1].id = "T-001"
    with pytest.raises(StoreError, match="duplicate ticket ids T-001"):
        store.save_track(track)
    assert not (store.tracks_dir / track.id / "plan.md").exists()


# ---------------------------------------------------------------------------------------------
# the hand-written Conductor fixture
# ---------------------------------------------------------------------------------------------

def test_fixture_uses_both_registry_forms_and_no_state():
    reg = (FIXTURE / "conductor" / "tracks.md").read_text()
    assert "- [~] **Track: User authentication**" in reg
    assert "## [ ] Track: Fix the login redirect loop" in reg
    assert not list(FIXTURE.rglob("state.toml"))


def test_fixture_loads_with_tickets_deps_and_shas(tmp_path: Path):
    store = ConductorStore(copy_fixture(tmp_path))
    tracks, problems = store.load_tracks()
    assert problems == []
    assert [t.id for t in tracks] == ["user_auth_20250114", "fix_login_redirect_20250120"]
    auth, bug = tracks

    assert auth.title == "User authentication" and auth.type == "feature"
    assert auth.status == "in_progress" and auth.created_at == "2025-01-14T09:30:00Z"
    assert auth.goal.startswith("Let users sign up and log in") and auth.goal.endswith("private to them.")
    assert auth.acceptance_criteria == ["A new user can sign up and is logged in afterwards.",
                                        "A wrong password is rejected with a clear message.",
                                        "Sessions expire after 30 days of inactivity."]
    got = [(t.id, t.status, t.phase, t.depends_on, t.commit_sha) for t in auth.tickets]
    assert got == [
        ("UA-1", "completed", "Data model", [], "1a2b3c4"),
        ("UA-2", "completed", "Data model", ["UA-1"], "5d6e7f8"),
        ("UA-3", "completed", "Data model", ["UA-2"], "9f8e7d6"),
        ("UA-4", "in_progress", "Endpoints", ["UA-3"], ""),   # plan order: after Phase 1's check
        ("UA-5", "todo", "Endpoints", ["UA-4"], ""),
        ("UA-6", "todo", "Endpoints", ["UA-5"], ""),
    ]
    assert auth.tickets[0].description == ("Create the users table\n"
                                           "- [x] Write tests for the migration\n"
                                           "- [x] Write the migration")
    assert auth.tickets[3].description == "Sign-up endpoint\n- [x] Write tests\n- [ ] Implement"
    assert auth.tickets[2].description == ("Conductor - User Manual Verification 'Data model' "
                                           "(Protocol in workflow.md)")

    assert bug.title == "Fix the login redirect loop" and bug.type == "bug" and bug.status == "new"
    got = [(t.id, t.description, t.phase, t.depends_on, t.status) for t in bug.tickets]
    assert got == [
        ("FLR-1", "Write a failing test for the redirect loop", "Reproduce", [], "todo"),
        ("FLR-2", "Find the cause in the session middleware", "Reproduce", ["FLR-1"], "todo"),
        ("FLR-3", "Fix the middleware", "Fix", ["FLR-2"], "todo"),
        ("FLR-4", "Update the changelog", "Fix", ["FLR-3"], "todo"),
    ]
    # ids are stable across reads of the same files
    again, _ = store.load_tracks()
    assert again == tracks


def test_fixture_registry_status_when_metadata_is_missing(tmp_path: Path):
    root = copy_fixture(tmp_path)
    store = ConductorStore(root)
    for meta in store.tracks_dir.glob("*/metadata.json"):
        meta.unlink()
    with store.registry_path.open("a") as f:
        f.write("\n---\n\n- [ ] **Track: Gone**\n*Link: [./tracks/gone_20250101/](./tracks/gone_20250101/)*\n")
    tracks, problems = store.load_tracks()
    by_id = {t.id: t for t in tracks}
    assert by_id["user_auth_20250114"].status == "in_progress"     # "- [~] **Track:" form
    assert by_id["fix_login_redirect_20250120"].status == "new"     # legacy "## [ ] Track:" form
    assert by_id["fix_login_redirect_20250120"].type == "feature"
    # the folder name's date stands in for created_at, so the order is kept
    assert [t.id for t in tracks] == ["user_auth_20250114", "fix_login_redirect_20250120"]
    assert by_id["user_auth_20250114"].created_at == "2025-01-14T00:00:00Z"
    assert not [p for p in problems if p.path.endswith("metadata.json")]   # optional: not a problem
    gone = [p for p in problems if p.path == str(store.registry_path)]
    assert len(gone) == 1 and "gone_20250101" in gone[0].message and gone[0].line is not None


def test_fixture_save_keeps_conductor_content(tmp_path: Path):
    store = ConductorStore(copy_fixture(tmp_path))
    tracks, _ = store.load_tracks()
    auth, bug = tracks
    auth.ticket("UA-4").status = "completed"
    auth.ticket("UA-4").commit_sha = "0a1b2c3"
    store.save_track(auth)
    bug.status = "in_progress"
    store.save_track(bug)

    folder = store.tracks_dir / auth.id
    spec = (folder / "spec.md").read_text()
    for kept in ("## Functional Requirements", "- Passwords hashed with bcrypt.",
                 "## Non-Functional Requirements", "- Social login (Google, GitHub)."):
        assert kept in spec
    plan = (folder / "plan.md").read_text()
    assert "## Phase 1: Data model [checkpoint: 9f8e7d6]" in plan
    assert "Endpoints follow the REST conventions in tech-stack.md." in plan
    # the SHA in the form the plan already uses (two backticks, one bracket: backticks win a tie
    # by coming first); nothing else on the line or around it changes
    assert task_line(plan, "Sign-up endpoint") == "- [x] Task: Sign-up endpoint `0a1b2c3`"
    assert "    - [x] Write tests\n    - [ ] Implement" in plan
    assert task_line(plan, "Create the users table") == "- [x] Task: Create the users table `1a2b3c4`"
    original = (FIXTURE / "conductor/tracks" / auth.id / "plan.md").read_text()
    assert plan == original.replace("- [~] Task: Sign-up endpoint", "- [x] Task: Sign-up endpoint `0a1b2c3`")

    reg = store.registry_path.read_text()
    assert "## [~] Track: Fix the login redirect loop" in reg      # updated in place, same form
    assert reg.count("Track:") == 2
    assert "- [~] **Track: User authentication**" in reg

    again, problems = store.load_tracks()
    assert problems == []
    assert again == [auth, bug]


# ---------------------------------------------------------------------------------------------
# bad input: a problem naming the file (and line), and the rest loads
# ---------------------------------------------------------------------------------------------

def test_malformed_plan_line_is_reported_and_the_rest_loads(store: ConductorStore):
    folder = store.tracks_dir / "odd_20261124"
    folder.mkdir(parents=True)
    (folder / "spec.md").write_text("# Specification: Odd\n\n## Overview\n\nOdd plan.\n")
    (folder / "plan.md").write_text(
        "# Implementation Plan: Odd\n"
        "\n"
        "- [ ] Task: Before any phase\n"
        "\n"
        "## Phase 1: Work\n"
        "\n"
        "- [ ] Task: T-1: First\n"
        "- [?] Task: Broken marker\n"
        "- [x] Task: Third `deadbee`\n"
        "- [ ] Task: T-9 Fourth (depends on: T-1)\n")
    (folder / "metadata.json").write_text(json.dumps({"track_id": "odd_20261124", "status": "new"}))
    track, problems = store.load_track("odd_20261124")
    assert len(problems) == 1
    p = problems[0]
    assert p.path == str(folder / "plan.md") and p.line == 8 and "[?]" in p.message
    assert str(p) == f"{folder / 'plan.md'}:8: {p.message}"
    assert track.problems == [str(p)]
    got = [(t.id, t.description, t.status, t.phase, t.depends_on, t.commit_sha) for t in track.tickets]
    assert got == [
        ("O-1", "Before any phase", "todo", "", [], ""),
        ("T-1", "First", "todo", "Work", ["O-1"], ""),
        ("O-3", "Broken marker", "todo", "Work", ["T-1"], ""),
        ("O-4", "Third", "completed", "Work", ["O-3"], "deadbee"),
        ("T-9", "Fourth", "todo", "Work", ["T-1"], ""),
    ]
    # nothing is lost when it is written back, and nothing the person wrote is changed: the
    # odd marker stays (and so does its problem) until the task runs
    before = (folder / "plan.md").read_bytes()
    store.save_track(track)
    assert (folder / "plan.md").read_bytes() == before
    again, problems = store.load_track(track.id)
    assert len(problems) == 1 and again.tickets == track.tickets


def test_corrupt_state_toml_is_kept_and_track_needs_attention(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    folder = store.tracks_dir / track.id
    bad = '# hand edited\nformat = 1\n[track\nid = "x"\n'
    (folder / "state.toml").write_text(bad)

    loaded, problems = store.load_track(track.id)
    assert loaded.status == "needs_attention"
    state_problems = [p for p in problems if p.path == str(folder / "state.toml")]
    assert len(state_problems) == 1 and state_problems[0].line == 3
    assert "invalid TOML" in state_problems[0].message
    assert str(state_problems[0]) in loaded.problems
    assert (folder / "state.toml").read_text() == bad                 # kept as it is
    # what plan.md and spec.md hold still loads: the plan has no ids (the extension's form), so
    # without state.toml the tickets get positional ids and plan-order dependencies
    assert [t.id for t in loaded.tickets] == ["HE-1", "HE-2", "HE-3", "HE-4", "HE-5"]
    assert [t.description for t in loaded.tickets] == [t.description for t in track.tickets]
    assert loaded.ticket("HE-1").status == "completed"
    assert loaded.ticket("HE-1").commit_sha == "aaaaaaa"
    assert loaded.ticket("HE-4").depends_on == ["HE-3"]
    assert loaded.goal == track.goal and loaded.acceptance_criteria == track.acceptance_criteria

    # the next save keeps a copy of the corrupt file before replacing it
    loaded.status = "in_progress"
    store.save_track(loaded)
    copies = list(folder.glob("state.toml.bad-*"))
    assert len(copies) == 1 and copies[0].read_text() == bad
    again, problems = store.load_track(track.id)
    assert problems == [] and again.status == "in_progress"


def test_state_toml_with_invalid_values_is_corrupt(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    path = store.tracks_dir / track.id / "state.toml"
    path.write_text(path.read_text().replace('status = "failed"', 'status = "exploded"'))
    loaded, problems = store.load_track(track.id)
    assert loaded.status == "needs_attention"
    assert any(p.path == str(path) and "tickets.1.status" in p.message for p in problems)


def test_corrupt_metadata_json(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    folder = store.tracks_dir / track.id
    (folder / "metadata.json").write_text('{\n  "track_id": "health_endpoint_20261124",\n  "type": \n')
    loaded, problems = store.load_track(track.id)
    assert len(problems) == 1
    assert problems[0].path == str(folder / "metadata.json") and problems[0].line == 4
    assert "invalid JSON" in problems[0].message
    assert loaded.id == track.id and loaded.title == "Health endpoint"
    assert loaded.status == "in_progress" and loaded.created_at == track.created_at   # from state.toml
    assert loaded.tickets == track.tickets

    # without state.toml either: defaults, id from the folder, title from the spec, status
    # from the registry's marker ([~])
    (folder / "state.toml").unlink()
    loaded, problems = store.load_track(track.id)
    assert loaded.id == track.id and loaded.title == "Health endpoint"
    assert loaded.status == "in_progress"
    assert loaded.type == "feature" and loaded.created_at == "2026-11-24T00:00:00Z"

    # a file someone else wrote is not replaced: the broken metadata.json stays as it is
    broken = (folder / "metadata.json").read_bytes()
    loaded.updated_at = "2026-11-25T00:00:00Z"
    store.save_track(loaded)
    assert (folder / "metadata.json").read_bytes() == broken
    assert not list(folder.glob("metadata.json.bad-*"))


def test_one_broken_track_does_not_stop_the_others(store: ConductorStore):
    first = make_track("first_20261120")
    first.created_at = "2026-11-20T08:00:00Z"
    second = make_track("second_20261122")
    second.created_at = "2026-11-19T08:00:00Z"
    store.create_track(first)
    store.create_track(second)
    (store.tracks_dir / first.id / "plan.md").write_bytes(b"# Implementation Plan: X\n\xff\xfe\n")
    (store.tracks_dir / "not_a_track.txt").write_text("stray file")
    tracks, problems = store.load_tracks()
    assert [t.id for t in tracks] == [second.id, first.id]          # created_at, then id
    assert tracks[0] == second
    assert any(p.path == str(store.tracks_dir / first.id / "plan.md") and "UTF-8" in p.message
               for p in problems)
    # the undecodable plan.md is copied aside, not lost, when the track is saved again
    store.save_track(tracks[1])
    assert len(list((store.tracks_dir / first.id).glob("plan.md.bad-*"))) == 1


def test_load_track_errors(store: ConductorStore):
    with pytest.raises(StoreError, match="no track nope_20260101"):
        store.load_track("nope_20260101")
    with pytest.raises(StoreError, match="invalid track id"):
        store.load_track("../etc")
    with pytest.raises(StoreError, match="invalid track id"):
        store.create_track(Track(id="a/b", title="x"))


# ---------------------------------------------------------------------------------------------
# plan.md vs state.toml
# ---------------------------------------------------------------------------------------------

def test_crash_between_state_and_plan_reconciles_to_completed(store: ConductorStore, monkeypatch):
    track = make_track()
    track.tickets[1].status = "in_progress"
    store.create_track(track)
    folder = store.tracks_dir / track.id
    old_plan = (folder / "plan.md").read_text()
    assert task_line(old_plan, "Return the version").startswith("- [~]")

    # state.toml is written (T-002 completed with its commit), then the process dies
    # before plan.md is replaced
    real_replace = os.replace

    def die_on_plan(src, dst):
        if Path(dst).name == "plan.md":
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_plan)
    track.tickets[1].status = "completed"
    track.tickets[1].commit_sha = "bbbbbbb"
    with pytest.raises(KeyboardInterrupt):
        store.save_track(track)
    monkeypatch.setattr(os, "replace", real_replace)

    assert (folder / "plan.md").read_text() == old_plan
    assert not list(folder.glob(".*.tmp"))
    loaded, problems = store.load_track(track.id)
    assert problems == []
    assert loaded.ticket("T-002").status == "completed"
    assert loaded.ticket("T-002").commit_sha == "bbbbbbb"
    assert loaded.ticket("T-002").retry_count == 2


def test_ticked_by_hand_in_plan_wins(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    path = store.tracks_dir / track.id / "plan.md"
    text = path.read_text()
    old = task_line(text, "Return the version")
    path.write_text(text.replace(old, "- [x] Task: Return the version `1234abc`"))
    loaded, problems = store.load_track(track.id)
    assert problems == []
    t = loaded.ticket("T-002")
    assert t.status == "completed" and t.commit_sha == "1234abc"
    assert t.retry_count == 2 and t.target_files == ["app/version.py"]   # rest from state.toml


def test_hand_edits_to_plan_and_spec_win_over_state(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    folder = store.tracks_dir / track.id
    plan = (folder / "plan.md").read_text()
    plan = plan.replace("Return the version", "Return the version and the git sha")
    plan = plan.replace("## Phase 2: Docs", "## Phase 2: Documentation")
    (folder / "plan.md").write_text(plan)
    spec = (folder / "spec.md").read_text()
    (folder / "spec.md").write_text(spec.replace("- The endpoint is documented in the README",
                                                 "- The endpoint is in the README\n- And in the wiki"))
    loaded, problems = store.load_track(track.id)
    assert problems == []
    assert loaded.ticket("T-002").description == "Return the version and the git sha"
    assert loaded.ticket("T-002").model_override == "gemini-2.5-pro"
    assert loaded.ticket("T-004").phase == "Documentation"
    assert loaded.ticket("T-001").description == track.tickets[0].description
    assert loaded.goal == track.goal
    assert loaded.acceptance_criteria == [track.acceptance_criteria[0],
                                          "The endpoint is in the README", "And in the wiki"]


def test_tickets_only_in_plan_or_only_in_state(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    path = store.tracks_dir / track.id / "plan.md"
    text = path.read_text()
    text = text.replace(task_line(text, "Announce it") + "\n", "")
    text = text.replace(task_line(text, "Document /health"),
                        task_line(text, "Document /health") + "\n- [ ] Task: Proofread the docs")
    path.write_text(text)
    loaded, problems = store.load_track(track.id)
    assert len(problems) == 1
    assert problems[0].path.endswith("state.toml") and "T-005" in problems[0].message
    ids = [t.id for t in loaded.tickets]
    assert ids == ["T-001", "T-002", "setup-db", "T-004", "HE-5", "T-005"]
    added = loaded.ticket("HE-5")
    assert added.description == "Proofread the docs" and added.phase == "Docs"
    assert added.depends_on == ["T-004"] and added.status == "todo"
    assert loaded.ticket("T-005") == track.ticket("T-005")
    store.save_track(loaded)
    again, problems = store.load_track(track.id)
    assert problems == [] and again.tickets == loaded.tickets


def test_without_state_toml_the_plan_loads_in_plan_order(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    (store.tracks_dir / track.id / "state.toml").unlink()
    loaded, _ = store.load_track(track.id)
    ids = [t.id for t in loaded.tickets]
    assert ids == ["HE-1", "HE-2", "HE-3", "HE-4", "HE-5"]
    assert [t.depends_on for t in loaded.tickets] == [[]] + [[i] for i in ids[:-1]]
    assert [t.description for t in loaded.tickets] == [t.description for t in track.tickets]
    assert [t.phase for t in loaded.tickets] == [t.phase for t in track.tickets]


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fail_on_call", [1, 2, 4])
def test_failed_replace_leaves_previous_files_and_no_temp_files(store: ConductorStore, monkeypatch,
                                                                 fail_on_call: int):
    track = make_track()
    store.create_track(track)
    folder = store.tracks_dir / track.id
    before = snapshot(folder)
    registry_before = store.registry_path.read_bytes()

    track.tickets[4].status = "completed"
    track.tickets[4].commit_sha = "ccccccc"
    track.status = "completed"
    real_replace = os.replace
    calls: list[str] = []

    def flaky_replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == fail_on_call:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(StoreError, match="No space left on device") as err:
        store.save_track(track)
    # state.toml before plan.md; unchanged files (spec.md, index.md) are not rewritten
    assert calls == ["state.toml", "plan.md", "metadata.json", "tracks.md"][:fail_on_call]
    assert calls[-1] in str(err.value)
    monkeypatch.setattr(os, "replace", real_replace)

    after = snapshot(folder)
    assert set(after) == set(before), "no temp files left behind"
    assert not [p for p in store.workspace.rglob("*.tmp")]
    written = set(calls[:-1])
    for name in before:
        if name not in written:
            assert after[name] == before[name], f"{name} changed"
    assert store.registry_path.read_bytes() == registry_before
    # whatever made it to disk reconciles to a consistent track
    loaded, problems = store.load_track(track.id)
    assert problems == []
    expected = "completed" if fail_on_call > 1 else "todo"
    assert loaded.ticket("T-005").status == expected


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------

def test_ensure_layout_creates_and_never_overwrites(store: ConductorStore):
    store.ensure_layout()
    for name in ("product.md", "tech-stack.md", "workflow.md", "index.md", "tracks.md"):
        assert (store.conductor_dir / name).is_file(), name
    assert store.tracks_dir.is_dir()
    assert store.registry_path.read_text().startswith("# Project Tracks\n")
    assert (store.clutch_dir / ".gitignore").read_text() == "*\n"
    (store.conductor_dir / "product.md").write_text("# Mine\n")
    store.registry_path.write_text("# Project Tracks\n\nhand notes\n")
    store.ensure_layout()
    assert (store.conductor_dir / "product.md").read_text() == "# Mine\n"
    assert store.registry_path.read_text() == "# Project Tracks\n\nhand notes\n"
    store.create_track(make_track())
    assert store.registry_path.read_text().startswith("# Project Tracks\n\nhand notes\n\n---\n\n- [~]")


def test_paths(tmp_path: Path):
    store = ConductorStore(str(tmp_path))
    assert store.workspace == tmp_path and store.conductor_dir == tmp_path / "conductor"
    assert store.tracks_dir == tmp_path / "conductor" / "tracks"
    assert store.clutch_dir == tmp_path / ".clutch"
    assert store.settings_path() == tmp_path / ".clutch" / "config.toml"
    sessions = store.sessions_dir()
    assert sessions == tmp_path / ".clutch" / "sessions" and sessions.is_dir()
    assert (tmp_path / ".clutch" / ".gitignore").read_text() == "*\n"
    assert str(LoadProblem("a.md", None, "boom")) == "a.md: boom"
    assert str(LoadProblem("a.md", 3, "boom")) == "a.md:3: boom"


def test_timestamps_kept_or_filled(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    assert track.updated_at == "2026-11-24T10:00:00Z"          # the caller's, not overwritten
    bare = Track(id="bare_20261124", title="Bare")
    store.create_track(bare)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", bare.created_at)
    assert bare.updated_at == bare.created_at
    loaded, problems = store.load_track(bare.id)
    assert problems == [] and loaded == bare


# ---------------------------------------------------------------------------------------------
# saving again: what the store remembers of its last save changes nothing on disk
# ---------------------------------------------------------------------------------------------

def _mutate(track: Track, rng) -> None:
    t = rng.choice(track.tickets)
    what = rng.randrange(6)
    if what == 0:
        t.status = rng.choice(["todo", "in_progress", "completed", "failed", "blocked"])
    elif what == 1:
        t.retry_count += 1
        t.blocked_reason = f"try {t.retry_count}: \"quoted\"\nsecond line"
    elif what == 2:
        t.target_files.append(f"src/f{rng.randrange(99)}.py")      # a list changed in place
    elif what == 3:
        t.phase = rng.choice(["Server", "Docs", "Release"])           # phases move
    elif what == 4:
        track.tickets.append(Ticket(id=f"N-{len(track.tickets)}", description="new one",
                                    phase=rng.choice(["Server", "Docs"])))
    else:
        t.model_override = rng.choice([None, "gemini-2.5-flash"])
        t.commit_sha = "%040x" % rng.getrandbits(160)


def test_repeated_saves_write_what_a_fresh_store_writes(tmp_path: Path):
    """The store reuses each unchanged ticket's state.toml chunk and the plan.md merge of its
    last save; every file must still be byte for byte what a store with no memory writes,
    including after the user edits plan.md (notes, a phase heading) between saves."""
    import random
    rng = random.Random(5)
    a, b = ConductorStore(tmp_path / "a"), ConductorStore(tmp_path / "b")
    track = make_track()
    a.create_track(track.model_copy(deep=True))
    b.create_track(track.model_copy(deep=True))
    for step in range(60):
        _mutate(track, rng)
        if step % 15 == 7:       # the user writes notes into both plans by hand
            for s in (a, b):
                p = s.tracks_dir / track.id / "plan.md"
                p.write_text(p.read_text().replace("## Phase 1: Server\n",
                                                   f"## Phase 1: Server\n\nnote {step}\n", 1))
        a.save_track(track.model_copy(deep=True))
        fresh = ConductorStore(tmp_path / "b")
        fresh.save_track(track.model_copy(deep=True))
        assert snapshot(a.tracks_dir / track.id) == snapshot(b.tracks_dir / track.id), step
        loaded, problems = a.load_track(track.id)
        assert problems == []
        # (plan.md groups tickets by phase, so compare by id)
        assert {t.id: t.status for t in loaded.tickets} == {t.id: t.status for t in track.tickets}
    assert "note 52" in (a.tracks_dir / track.id / "plan.md").read_text()


def test_state_toml_is_exactly_the_whole_render(store: ConductorStore):
    import tomli_w
    track = make_track()
    store.create_track(track)
    text = (store.tracks_dir / track.id / "state.toml").read_text()
    body = text.split("\n", 2)[2]          # after the two comment lines
    data = tomllib.loads(body)
    assert body == tomli_w.dumps(data)
    assert [t["id"] for t in data["tickets"]] == [t.id for t in track.tickets]
    track.tickets = []
    store.save_track(track)
    assert tomllib.loads((store.tracks_dir / track.id / "state.toml").read_text())["tickets"] == []


def test_state_toml_corrupted_between_saves_is_still_kept_aside(store: ConductorStore):
    track = make_track()
    store.create_track(track)
    state = store.tracks_dir / track.id / "state.toml"
    store.save_track(track)                   # the store now knows the bytes it wrote
    state.write_text("format = [\n")
    track.tickets[4].status = "in_progress"
    store.save_track(track)
    copies = list(state.parent.glob("state.toml.bad-*"))
    assert len(copies) == 1 and copies[0].read_text() == "format = [\n"
    assert store.load_track(track.id)[1] == []


def test_ticket_chunks_are_what_tomli_w_writes():
    """state.toml's ticket chunks come from a fast renderer; it must write what tomli_w does,
    for every character a description, reason or result may hold."""
    import random
    import tomli_w
    from conductor_store import _ticket_dump, _toml_ticket
    rng = random.Random(3)
    alphabet = [chr(c) for c in range(0, 128)] + ["é", "→", "\u2028", "\U0001f600", "\ufeff"]
    for _ in range(300):
        def text() -> str:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        t = Ticket(id=text().strip() or "T-1", description=text(), status="failed",
                   target_files=[text() for _ in range(rng.randrange(3))],
                   depends_on=[text() for _ in range(rng.randrange(2))], blocked_reason=text(),
                   retry_count=rng.randrange(5), step_mode=rng.random() < 0.5, result=text(),
                   model_override=rng.choice([None, text()]))
        d = t.model_dump(mode="json", exclude_none=True)
        fast = _ticket_dump(t, dict(t.__dict__))
        assert fast == d and list(fast) == list(d)
        assert _toml_ticket(d) == tomli_w.dumps({"tickets": [d]})
        assert tomllib.loads(_toml_ticket(d))["tickets"] == [d]
