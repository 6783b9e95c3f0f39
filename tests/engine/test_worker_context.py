"""Context per tier (issue 19), through the engine: a worker's spawn carries its context as
labelled sections with token counts (the map focused on its files, its context files'
skeletons, its small target files in full, the ticket last), the person's edits of those
sections are exactly what the worker is sent, Tier 4 reads the files a failure touches, every
agent's sections are kept for the Usage panel, and a real provider's Tier 1 and Tier 2
requests (the google-genai SDK against the fake Gemini server) carry the repository's symbols."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import prompts
from ai_client import FunctionProvider, ModelRequest, ModelResponse
from conftest import Approver
from models import (Approved, GeminiSettings, Settings, SpawnPayload, Ticket, TrackProposal,
                    stream_tier1, stream_tier2, stream_tier3, stream_tier4)
from multi_agent_conductor import ConductorEngine

UTIL = ('"""Small helpers."""\n\n\ndef add(a, b):\n    return a + b\n\n\n'
        'def scale_vector(v, k):\n    return [x * k for x in v]\n')
APP = ("from util import add, scale_vector\n\n\n"
       "def main():\n    print(add(1, 2), scale_vector([1, 2], 3))\n")
TEST_UTIL = "from util import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
EPIC = "Add multiply(a, b) to util.py with a test in tests/test_util.py"


def small_repo(ws: Path) -> None:
    """The issue's repository: util.py with add() and scale_vector(), app.py importing it, a
    test file; committed, so the map lists what git tracks."""
    (ws / "util.py").write_text(UTIL)
    (ws / "app.py").write_text(APP)
    (ws / "tests").mkdir()
    (ws / "tests" / "test_util.py").write_text(TEST_UTIL)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True)


def one_ticket_track(eng: ConductorEngine, ticket: Ticket) -> str:
    [track] = eng.accept_tracks([TrackProposal(title="Core: multiply", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [ticket]).result(10)
    return track.id


def multiply_ticket() -> Ticket:
    return Ticket(id="T-001", description="Add multiply(a, b) to util.py.",
                  target_files=["util.py"], context_requirements=["app.py", "docs/missing.md"])


def first_request_text(eng: ConductorEngine, ticket_id: str) -> str:
    req = next(e for e in eng.comms.entries()
               if e["kind"] == "request" and e["ticket_id"] == ticket_id)
    return req["data"]["messages"][0]["text"]


def test_a_spawn_shows_the_workers_context_as_sections_and_the_worker_gets_exactly_them(
        make_engine, workspace):
    small_repo(workspace)
    eng = make_engine(auto_approve=False)
    tid = one_ticket_track(eng, multiply_ticket())
    ap = Approver(eng, lambda r: Approved())
    ap.start()
    try:
        track = eng.start_track(tid).result(60)
    finally:
        ap.stop.set()
    assert track.tickets[0].status == "completed", track.tickets[0].blocked_reason
    [spawn] = [r for r in ap.seen if r.kind == "spawn"]
    p = spawn.payload
    assert isinstance(p, SpawnPayload)
    kinds = [s.kind for s in p.sections]
    # shared first (the system prompt), then the map, the files, and the ticket last
    assert kinds == ["system", "map", "skeleton", "file", "ticket"], kinds
    secs = {s.kind: s for s in p.sections}
    assert secs["skeleton"].path == "app.py" and "def main" in secs["skeleton"].text
    assert secs["file"].path == "util.py" and UTIL.rstrip() in secs["file"].text  # in full
    assert "util.py" in secs["map"].text and "scale_vector" in secs["map"].text
    assert all(s.tokens == -(-len(s.text) // 4) > 0 for s in p.sections)
    assert secs["system"].shared and not secs["ticket"].shared
    # the ticket names the missing context file as missing, never as one to read
    assert "- docs/missing.md" not in secs["ticket"].text
    assert "NOT IN THE WORKSPACE" in secs["ticket"].text and "docs/missing.md" in secs["ticket"].text
    assert p.prompt == secs["ticket"].text and p.context == ""
    # what was shown is what was sent: the system prompt apart, the rest in order
    system, user = prompts.render_sections(p.sections)
    assert first_request_text(eng, "T-001") == user
    req = next(e for e in eng.comms.entries() if e["kind"] == "request" and e["ticket_id"] == "T-001")
    assert system in (req["data"].get("system") or "")
    # the worker edited the file it was shown, in place
    assert "def multiply" in (workspace / "util.py").read_text()
    assert "def scale_vector" in (workspace / "util.py").read_text()


def test_a_file_dropped_and_a_section_edited_at_the_spawn_are_what_the_worker_gets(
        make_engine, workspace):
    small_repo(workspace)
    (workspace / "notes.md").write_text("Multiply must accept floats.\n")
    eng = make_engine(auto_approve=False)
    tid = one_ticket_track(eng, multiply_ticket())

    def decide(req):
        if req.kind != "spawn":
            return Approved()
        secs = prompts.without_file(req.payload.sections, "app.py")      # drop a file
        secs = prompts.with_file(secs, "notes.md", "Multiply must accept floats.\n")  # add one
        ticket = next(s for s in secs if s.kind == "ticket")
        edited = ticket.text + "Keep add() as it is.\n"                 # edit the ticket
        secs = [s.with_text(edited) if s is ticket else s for s in secs]
        return Approved(edits={"sections": [s.model_dump() for s in secs], "prompt": edited})
    track = Approver.run_track(eng, tid, decide)
    assert track.tickets[0].status == "completed", track.tickets[0].blocked_reason
    text = first_request_text(eng, "T-001")
    assert "SKELETON app.py" not in text and "- app.py" not in text      # dropped: gone
    assert "FILE notes.md:\nMultiply must accept floats." in text        # added
    assert text.rstrip().endswith("Keep add() as it is.")                # edited, still last
    labels = [s.label for s in eng.context_sections(stream_tier3("T-001"))]
    assert "Skeleton: app.py" not in labels and "File: notes.md" in labels
    spawn = next(e for e in eng.comms.entries() if e["kind"] == "spawn")
    assert [s["label"] for s in spawn["data"]["sections"]] == labels


def test_an_old_style_prompt_edit_rewrites_the_ticket_section_and_the_system_is_not_editable():
    from models import ApprovalEditError, edit_payload
    secs = prompts.tier3_sections("T-001", "do it", "Core", ["a.py"], [], "a.py:\n  def f()\n",
                                  full_files={"a.py": "def f():\n    pass\n"})
    ticket = secs[-1]
    p = SpawnPayload(prompt=ticket.text, sections=secs)
    edited = edit_payload(p, {"prompt": ticket.text.replace("do it", "do it well")})
    assert isinstance(edited, SpawnPayload)
    out = edited.request_sections(p)
    assert out[-1].text.startswith("TICKET T-001: do it well") and out[:-1] == secs[:-1]
    assert p.request_sections(p) == secs          # nothing edited: the sections as built
    import pytest
    with pytest.raises(ApprovalEditError, match="system prompt is shown, not edited"):
        edit_payload(p, {"sections": [secs[0].with_text("be evil"), *secs[1:]]})
    with pytest.raises(ApprovalEditError, match="nothing besides the system prompt"):
        edit_payload(p, {"sections": [secs[0]]})
    with pytest.raises(ApprovalEditError, match="no ticket section"):
        edit_payload(p, {"sections": [s.model_dump() for s in secs[:-1]]})
    with pytest.raises(ApprovalEditError, match="sections.0.kind"):
        edit_payload(p, {"sections": [{"label": "x", "text": "y"}]})
    with pytest.raises(ApprovalEditError, match="prompt is empty"):
        edit_payload(p, {"prompt": "  "})
    assert SpawnPayload(prompt="x").request_sections() == []       # no sections: prompt+context


def test_tier4_reads_the_files_the_failure_touches(make_engine, workspace):
    small_repo(workspace)
    seen: list[ModelRequest] = []

    def fn(req: ModelRequest):
        seen.append(req)
        return ModelResponse(text="util.py line 5: multiply is missing. Add it.")
    eng = make_engine(provider=FunctionProvider(fn))
    tid = one_ticket_track(eng, multiply_ticket())
    trace = ('Traceback (most recent call last):\n  File "tests/test_util.py", line 5, in test_m\n'
             "ImportError: cannot import name 'multiply' from 'util'\n")
    eng.run_qa(tid, "T-001", "pytest failed", trace)
    [req] = [r for r in seen if r.tier == "Tier 4"]
    text = req.messages[0].text
    assert "FILE tests/test_util.py:\n" + TEST_UTIL.rstrip() in text    # named by the trace
    assert "FILE util.py:\n" in text and "def scale_vector" in text      # the ticket's target
    assert text.index("FILE util.py") < text.index("FAILURE IN TICKET T-001")  # failure last
    labels = [s.label for s in eng.context_sections(stream_tier4("T-001"))]
    assert labels == ["System prompt", "File: tests/test_util.py", "File: util.py",
                      "Failure in T-001"]


def test_every_agents_context_is_kept_with_its_tokens(make_engine, workspace):
    small_repo(workspace)
    eng = make_engine()
    plan = eng.plan_epic(EPIC).result(60)
    [track] = eng.accept_tracks(plan.tracks).result(30)
    planned = eng.plan_track(track.id).result(60)
    eng.start_track(track.id).result(120)
    ctx = eng.contexts()
    assert {stream_tier1(), stream_tier2(track.id)} <= ctx.keys()
    assert {stream_tier3(k.id) for k in planned.tickets} <= ctx.keys()
    t1 = ctx[stream_tier1()]
    assert [s.kind for s in t1][0] == "system" and t1[-1].kind == "epic"
    assert any(s.kind == "map" and s.shared for s in t1)
    # the sections' tokens add up to what the request held (one token per four characters)
    req = next(e for e in eng.comms.entries() if e["kind"] == "request" and e["tier"] == "Tier 1")
    sent = len(req["data"]["messages"][0]["text"]) + len(req["data"].get("system") or "")
    assert abs(sum(s.tokens for s in t1) * 4 - sent) < 4 * len(t1) + 16


def test_a_real_providers_planners_see_the_repositorys_symbols(workspace, monkeypatch):
    """google-genai against the fake Gemini server: the bodies of the Tier 1 and Tier 2
    requests hold `scale_vector` (from util.py, which the epic names) and the shared parts
    come first (system instruction apart, the map before the epic)."""
    from tests.fakes.fake_gemini import FakeGemini, Json, RecordedRequest
    key = "AIzaFAKE-context-test-key-0123456789"
    monkeypatch.setenv("GEMINI_API_KEY", key)
    small_repo(workspace)

    def script(r: RecordedRequest):
        if "You are Tier 1" in str(r.body.get("systemInstruction")):
            return Json({"tracks": [{"title": "Multiply", "goal": "g",
                                     "acceptance_criteria": ["c"]}]})
        return Json({"tickets": [{"id": "T-001", "description": "add multiply",
                                  "target_files": ["util.py"], "context_requirements": [],
                                  "depends_on": []}]})
    with FakeGemini(api_key=key) as srv:
        srv.script(script)
        settings = Settings(provider="gemini", git_commits=False, gemini=GeminiSettings(
            base_url=srv.base_url, max_retries=1, retry_initial_delay_s=0.01,
            retry_max_delay_s=0.05))
        with ConductorEngine(workspace, settings, auto_approve=True) as eng:
            plan = eng.plan_epic(EPIC).result(30)
            [track] = eng.accept_tracks(plan.tracks).result(10)
            eng.plan_track(track.id).result(30)
        bodies = {("Tier 1" if "You are Tier 1" in str(r.body.get("systemInstruction"))
                   else "Tier 2"): r for r in srv.requests if "generateContent" in r.path
                  or "streamGenerateContent" in r.path}
    assert bodies.keys() == {"Tier 1", "Tier 2"}
    for tier, r in bodies.items():
        user = r.prompt_text
        assert "scale_vector" in user and "util.py" in user, (tier, user[:400])
        assert user.index("REPOSITORY MAP:") < user.index("EPIC:" if tier == "Tier 1" else "TRACK:")


def test_the_map_follows_the_code_not_the_planners_bookkeeping(make_engine, workspace):
    """Conductor's track files change on every tick (temp files while saving): the worker's map
    never lists them, so two identical runs send identical requests."""
    small_repo(workspace)
    eng = make_engine()
    tid = one_ticket_track(eng, multiply_ticket())
    time.sleep(0.05)
    eng.start_track(tid).result(60)
    text = first_request_text(eng, "T-001")
    assert "conductor/tracks" not in text and "state.toml" not in text



def test_tier2_reads_the_code_before_it_plans_and_its_notes_reach_the_plan(make_engine,
                                                                            workspace):
    """With reading on (settings.tier2_read_rounds), Tier 2 first reads with the read-only
    tools only (a write is refused), streamed on its own stream; its notes are a section of
    the planning request, before the track."""
    small_repo(workspace)
    reqs: list[ModelRequest] = []

    def fn(req: ModelRequest):
        reqs.append(req)
        if req.tier == "Tier 1":
            return ModelResponse(text='{"tracks": [{"title": "Multiply", "goal": "g", '
                                      '"acceptance_criteria": ["c"]}]}')
        if req.tools:                            # the reading session
            done = [r for m in req.messages for r in m.tool_returns]
            from ai_client import ToolCall
            if not done:
                return ModelResponse(text="", tool_calls=[
                    ToolCall(id="r1", name="read_file", args={"path": "util.py"}),
                    ToolCall(id="w1", name="write_file", args={"path": "x.py", "content": "x"})])
            seen = {r.name: r.result for r in done}
            assert seen["write_file"]["ok"] is False and "may only read" in seen["write_file"]["error"]
            assert "def scale_vector" in str(seen["read_file"])
            return ModelResponse(text="util.py holds add() and scale_vector(); multiply goes "
                                      "beside them (notes-5e2a).")
        return ModelResponse(text='{"tickets": [{"id": "T-001", "description": "add multiply", '
                                  '"target_files": ["util.py"]}]}')
    eng = make_engine(provider=FunctionProvider(fn), tier2_read_rounds=2)
    plan = eng.plan_epic(EPIC).result(60)
    [t] = eng.accept_tracks(plan.tracks).result(30)
    planned = eng.plan_track(t.id).result(60)
    assert [k.target_files for k in planned.tickets] == [["util.py"]]
    reading = [r for r in reqs if r.tier == "Tier 2" and r.tools]
    planning = [r for r in reqs if r.tier == "Tier 2" and not r.tools]
    assert {d.name for d in reading[0].tools} == {"read_file", "list_dir", "search_files"}
    assert len(reading) == 2 and len(planning) == 1
    text = planning[0].messages[0].text
    assert "notes-5e2a" in text and text.index("notes-5e2a") < text.index("TRACK:")
    assert not (workspace / "x.py").exists()
    assert "notes-5e2a" in eng.streams.text(stream_tier2(t.id))
    labels = [s.label for s in eng.context_sections(stream_tier2(t.id))]
    assert labels[-2:] == ["Tech lead's reading notes", "Track: Multiply"]
    # off: one planning request, no tools
    reqs.clear()
    eng.update_settings(eng.settings.model_copy(update={"tier2_read_rounds": 0}), save=False)
    eng.plan_track(t.id).result(60)
    assert [bool(r.tools) for r in reqs if r.tier == "Tier 2"] == [False]


def test_a_worker_in_another_tree_is_shown_that_trees_files(make_engine, workspace, tmp_path):
    """A ticket's worktree may hold what earlier tickets of its track merged: the sections
    show the files the worker will edit there, not the person's copy."""
    small_repo(workspace)
    tree = tmp_path / "tree"
    subprocess.run(["git", "clone", "-q", str(workspace), str(tree)], check=True)
    (tree / "util.py").write_text(UTIL + "\n\ndef merged_earlier(x):\n    return x\n")
    eng = make_engine()
    tid = one_ticket_track(eng, multiply_ticket())
    track = eng.track(tid)
    here = {s.path: s.text for s in eng._worker_sections(track, track.tickets[0])}
    there = {s.path: s.text for s in eng._worker_sections(track, track.tickets[0], root=tree)}
    assert "merged_earlier" not in here["util.py"] and "merged_earlier" in there["util.py"]
    assert not (tree / ".clutch").exists()        # no map cache left in the worker's tree


def test_a_file_added_to_a_context_is_read_whole_or_as_its_definitions(make_engine, workspace):
    from multi_agent_conductor import EngineError
    small_repo(workspace)
    big = "".join(f"def f{i}(a, b):\n    return a + b + {i}\n\n\n" for i in range(600))
    (workspace / "big.py").write_text(big)
    (workspace / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    eng = make_engine()
    assert eng.context_file("util.py") == (UTIL, False)
    text, skeleton = eng.context_file("big.py")
    assert skeleton and "def f599(a, b)" in text and "return a + b" not in text
    import pytest
    with pytest.raises(EngineError, match="binary"):
        eng.context_file("logo.png")
    for bad in ("../etc/passwd", "/etc/passwd", "nope.py"):
        with pytest.raises(EngineError, match="not a file of the workspace"):
            eng.context_file(bad)
    with pytest.raises(EngineError, match="needs a path"):
        eng.context_file("  ")


def test_a_map_that_cannot_be_built_is_a_warning_and_the_work_goes_on(make_engine, workspace):
    """A broken git repository: git ls-files fails. The planner still gets the listing and
    the reason, the worker still gets its ticket, and the log says why."""
    from events import LogEvent
    small_repo(workspace)
    (workspace / ".git" / "HEAD").write_text("garbage\n")      # git refuses this repository
    eng = make_engine()
    plan = eng.plan_epic(EPIC).result(60)
    assert plan.tracks
    tid = one_ticket_track(eng, multiply_ticket())
    track = eng.start_track(tid).result(60)
    assert track.tickets[0].status == "completed", track.tickets[0].blocked_reason
    text = first_request_text(eng, "T-001")
    assert "the repository map could not be built" in text and "TICKET T-001" in text
    events = eng.inbox.drain()
    assert any(isinstance(e, LogEvent) and e.level == "warning"
               and "repository map could not be built" in e.message for e in events)


def test_a_workers_map_leaves_out_what_parallel_tickets_are_changing(make_engine, workspace):
    """T-002 and T-003 both follow T-001: neither sees the other's file in its map (it may be
    half-written, and whether it is there at all would depend on timing), both see T-001's."""
    small_repo(workspace)
    eng = make_engine(max_workers=4)
    [track] = eng.accept_tracks([TrackProposal(title="Core: three", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [
        Ticket(id="T-001", description="Write src/base.py", target_files=["src/base.py"]),
        Ticket(id="T-002", description="Write src/left.py", target_files=["src/left.py"],
               depends_on=["T-001"]),
        Ticket(id="T-003", description="Write src/right.py", target_files=["src/right.py"],
               depends_on=["T-001"])]).result(10)
    done = eng.start_track(track.id).result(60)
    assert all(k.status == "completed" for k in done.tickets)
    left, right = first_request_text(eng, "T-002"), first_request_text(eng, "T-003")
    assert "src/base.py" in left and "src/base.py" in right
    assert "src/right.py" not in left and "src/left.py" not in right


def test_a_prepared_trees_map_reads_only_what_landed_since_and_shows_it(make_engine,
                                                                        workspace):
    """T-002's tree is prepared and mapped while T-001 works. At T-002's spawn the tree has
    been switched to the track tip holding T-001's work: its map reads just the file T-001
    added (not the whole tree again) and the worker is shown it."""
    from test_worktree_runs import call, repo, scripted, track_with
    repo(workspace)

    def slow_write(req):
        time.sleep(0.3)             # T-002's tree is prepared and mapped meanwhile
        return call("write_file", path="one.py", content="def one_thing(x):\n    return x\n")
    eng = make_engine(provider=scripted({
        "T-001": [slow_write, ModelResponse(text="done")],
        "T-002": [call("write_file", path="two.py", content="from one import one_thing\n"),
                  ModelResponse(text="done")]}), git_commits=True, max_workers=2)
    tid = track_with(eng, [
        Ticket(id="T-001", description="one", target_files=["one.py"]),
        Ticket(id="T-002", description="two: use one_thing", target_files=["two.py"],
               depends_on=["T-001"])])
    seen: list = []
    tree_map = eng._tree_map

    def recording(root, changed=None):
        rm = tree_map(root, changed)
        seen.append((Path(root).name, changed, rm.last_stats))
        return rm
    eng._tree_map = recording
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"]
    spawns = [(name, changed, stats) for name, changed, stats in seen if name == "T-002"]
    prepared, spawn = spawns[0], spawns[-1]
    assert prepared[1] is None                   # the preparation maps the whole tree
    assert spawn[1] == ["one.py"] and spawn[2].read == 1, spawns
    assert "one_thing" in first_request_text(eng, "T-002")
    eng.settle()


def test_a_noted_switch_serves_one_spawn_of_that_tree_and_a_later_set_up_replaces_it(
        make_engine, workspace):
    """The spawn reads only the paths a prepared tree's switch rewrote: once, for that tree;
    a later set-up of the ticket that was not a prepared switch (a retry, a resume) drops the
    note, so its spawn looks at the whole tree: a map is never built from another set-up's
    list of changes."""
    from test_worktree_runs import git, repo
    repo(workspace)
    eng = make_engine(git_commits=True)
    tb = eng._tb
    tb.start_track("t")
    path = tb.ticket_worktree("t", "T-1")
    at = git(path, "rev-parse", "HEAD").strip()
    root = tb.workspace_path(path)

    def note(prepared: bool = True) -> None:
        eng._mapped_at["T-1"] = at
        eng._note_switch("T-1", path, prepared=prepared, switched=[(at, ["util.py"])])

    note()
    assert eng._changed_since_map("T-1", root) == ["util.py"]
    assert eng._changed_since_map("T-1", root) is None          # once, at the spawn
    note()
    assert eng._changed_since_map("T-1", workspace) is None      # another tree
    note()
    note(prepared=False)          # a later set-up, not a prepared switch: the note goes
    assert eng._changed_since_map("T-1", root) is None
    note()
    eng._forget_prepared("T-1")    # the ticket stopped
    assert eng._changed_since_map("T-1", root) is None
    tb.cleanup_track("t", keep_branch=False, discard=True)
