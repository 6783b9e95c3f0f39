"""Issue 20, defect 17: descriptions that end in parentheses, through plan.md.

Dependencies live in state.toml; a `(depends on: ...)` a person writes at the end of a task in
plan.md is read. A ticket whose description itself ends in "(depends on: ...)" was read back as
a shorter description with made-up dependencies, its line written a second time and its ticket
reported missing: the writer now follows such a description with the ticket's own list. The
first two tests pass before the fix too (they pin what must not change)."""
from __future__ import annotations

from pathlib import Path

from conductor_store import ConductorStore
from models import Ticket, Track

DESCRIPTIONS = ["Create the module (core)", "Add greet() (the public API)",
                "Write tests (pytest, no network)", "Document it (README)",
                "Bump the version (1.2.3)"]


def track_with_parentheses() -> Track:
    deps = [[], ["T-001"], ["T-001", "T-002"], ["T-001"], []]   # not the plan's order
    return Track(id="paren_20261203", title="Parentheses (everywhere)", goal="g (x)",
                 acceptance_criteria=["ok (really)"], status="planned",
                 tickets=[Ticket(id=f"T-{i + 1:03d}", description=d, depends_on=deps[i])
                          for i, d in enumerate(DESCRIPTIONS)])


def test_dependencies_of_descriptions_ending_in_parentheses_survive_save_and_load(tmp_path: Path):
    store = ConductorStore(tmp_path)
    track = track_with_parentheses()
    store.create_track(track)
    store.save_track(track)
    again, problems = ConductorStore(tmp_path).load_track(track.id)
    assert problems == []
    assert [(t.id, t.description, t.depends_on) for t in again.tickets] == \
        [(t.id, t.description, t.depends_on) for t in track.tickets]
    plan = (store.tracks_dir / track.id / "plan.md").read_text()
    for d in DESCRIPTIONS:
        assert f"Task: {d}\n" in plan


def test_a_person_writes_depends_on_after_a_description_in_parentheses(tmp_path: Path):
    store = ConductorStore(tmp_path)
    track = track_with_parentheses()
    store.create_track(track)
    folder = store.tracks_dir / track.id
    (folder / "state.toml").unlink()      # plan.md alone, as a person or another tool wrote it
    (folder / "plan.md").write_text(
        "# Implementation Plan: Parentheses\n\n## Phase 1: Work\n"
        "- [ ] Task: Create the module (core)\n"
        "- [ ] Task: Add greet() (the public API) (depends on: none)\n"
        "- [ ] Task: Write tests (pytest) (depends on: P-1, P-2)\n"
        "- [x] Task: Document it (README) (depends on: P-1) abc1234\n")
    loaded, problems = ConductorStore(tmp_path).load_track(track.id)
    assert problems == []
    got = [(t.id, t.description, t.depends_on, t.commit_sha) for t in loaded.tickets]
    assert got == [("P-1", "Create the module (core)", [], ""),
                   ("P-2", "Add greet() (the public API)", [], ""),
                   ("P-3", "Write tests (pytest)", ["P-1", "P-2"], ""),
                   ("P-4", "Document it (README)", ["P-1"], "abc1234")]


WIRE = "Wire the client (depends on: the new API)"


def _load(tmp_path: Path, track_id: str) -> Track:
    track, problems = ConductorStore(tmp_path).load_track(track_id)
    assert problems == [], problems
    return track


def test_a_description_ending_in_a_depends_on_of_its_own_is_read_back_whole(tmp_path: Path):
    """It was read as dependencies "the", "new", "API", its line written twice, and state.toml's
    ticket reported as missing from plan.md."""
    store = ConductorStore(tmp_path)
    track = Track(id="wire_20261203", title="Wire", goal="g", acceptance_criteria=["a"], tickets=[
        Ticket(id="T-001", description="Make the API"),
        Ticket(id="T-002", description=WIRE, depends_on=["T-001"]),
        Ticket(id="T-003", description="Ship it (depends on: nothing)", depends_on=[],
               status="completed", commit_sha="b" * 40)])
    store.create_track(track)
    store.save_track(track)
    store.save_track(track)
    plan = (store.tracks_dir / track.id / "plan.md").read_text()
    assert plan.count("Wire the client") == 1 and plan.count("Ship it") == 1
    for folder_state in (True, False):          # with state.toml, and plan.md alone
        if not folder_state:
            (store.tracks_dir / track.id / "state.toml").unlink()
        again = _load(tmp_path, track.id)
        assert [(t.description, t.depends_on) for t in again.tickets] == [
            ("Make the API", []), (WIRE, ["T-001"]),
            ("Ship it (depends on: nothing)", [])]
        assert again.tickets[2].commit_sha.startswith("bbbbbbb")


def test_a_description_edited_to_end_in_a_depends_on_is_kept(tmp_path: Path):
    store = ConductorStore(tmp_path)
    track = Track(id="edit_20261203", title="Edit", goal="g", acceptance_criteria=["a"], tickets=[
        Ticket(id="T-001", description="Make the API"),
        Ticket(id="T-002", description="Wire up the HTTP client", depends_on=["T-001"])])
    store.create_track(track)
    store.save_track(track)
    edited = "Wire up the HTTP client (depends on: v2)"
    track.tickets[1].description = edited        # the person's edit in the ticket editor
    store.save_track(track)
    plan = (store.tracks_dir / track.id / "plan.md").read_text()
    assert plan.count("Wire up the HTTP client") == 1
    again = _load(tmp_path, track.id)
    assert [(t.id, t.description, t.depends_on) for t in again.tickets] == [
        ("T-001", "Make the API", []), ("T-002", edited, ["T-001"])]
