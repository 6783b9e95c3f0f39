"""The offline model reads the code (issue 19) and changes a file for every task (issue 16).

On the issue's small repository (util.py with add() and scale_vector(), app.py importing it,
tests/test_util.py), the Tier 1/2/3 requests are built the way the engine builds them
(prompts.tier*_sections + RepoMap + render_sections), and the worker's turns run through a real
AgentSession with a real Workspace: the tool calls land on disk."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prompts
from models import EpicPlan, Price, TrackPlan
from providers.base import Message, ModelRequest
from providers.comms import CommsLog
from providers.offline import OfflineProvider
from providers.session import AgentSession, ToolOutcome
from toolbox.repomap import RepoMap, ticket_files
from toolbox.specs import TOOL_SPECS
from toolbox.workspace import Workspace

UTIL = ('"""Small helpers."""\n\n\ndef add(a, b):\n    return a + b\n\n\n'
        "def scale_vector(v, k):\n    return [x * k for x in v]\n")
APP = ("from util import add, scale_vector\n\n\ndef main():\n"
       "    print(add(1, 2), scale_vector([1, 2], 3))\n\n\n"
       'if __name__ == "__main__":\n    main()\n')
TEST_UTIL = ("from util import add, scale_vector\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
             "def test_scale_vector():\n    assert scale_vector([1, 2], 3) == [3, 6]\n")
EPIC = "add multiply() to util.py with a test"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel, text in {"util.py": UTIL, "app.py": APP, "tests/test_util.py": TEST_UTIL}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        old = time.time() - 3600
        os.utime(p, (old, old))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def ask(tier: str, sections, ticket_id: str = "") -> str:
    system, user = prompts.render_sections(sections)
    req = ModelRequest(tier=tier, model="offline", system=system,
                       messages=[Message(role="user", text=user)], ticket_id=ticket_id)
    return OfflineProvider(pace_s=0).generate(req, lambda s: None).text


def plan(repo: Path, epic: str = EPIC) -> tuple[EpicPlan, list[TrackPlan]]:
    m = RepoMap(repo, persist=False)
    tracks = EpicPlan.model_validate_json(
        ask("Tier 1", prompts.tier1_sections(epic, m.render(text=epic))))
    plans = []
    first = 1
    for t in tracks.tracks:
        text = f"{t.title}\n{t.goal}\n" + "\n".join(t.acceptance_criteria)
        secs = prompts.tier2_sections(t.title, t.goal, t.acceptance_criteria, first,
                                      m.render(text=text))
        p = TrackPlan.model_validate_json(ask("Tier 2", secs))
        first += len(p.tickets)
        plans.append(p)
    return tracks, plans


def run_worker(repo: Path, ticket, track_title: str = "Core", *, with_files: bool = True,
               provider: OfflineProvider | None = None) -> tuple[AgentSession, str]:
    """One worker session on the ticket, its tools run by a real Workspace in the repo."""
    m = RepoMap(repo, persist=False)
    tf = ticket_files(m, ticket.target_files, ticket.context_requirements)
    secs = prompts.tier3_sections(
        ticket.id, ticket.description, track_title, ticket.target_files, ticket.depends_on,
        m.render(focus=ticket.target_files, text=ticket.description),
        full_files=tf.full if with_files else {}, skeletons=tf.skeletons,
        context_files=ticket.context_requirements, missing=tf.missing)
    system, user = prompts.render_sections(secs)
    ws = Workspace(repo, sandbox="none")

    def handle(call):
        return ToolOutcome(ws.execute(call.name, call.args).to_dict(), call.args)

    session = AgentSession(provider or OfflineProvider(pace_s=0), tier="Tier 3",
                           model="offline", stream_id=f"Tier 3 (Worker): {ticket.id}",
                           system=system, comms=CommsLog(), price=Price(), ticket_id=ticket.id,
                           tools=TOOL_SPECS, tool_handler=handle)
    return session, session.send(user)


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tool_calls(session: AgentSession) -> list[tuple[str, dict]]:
    return [(c.name, c.args) for m in session.history if m.role == "model" for c in m.tool_calls]


def dirs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()
            and ".git" not in p.parts and "__pycache__" not in p.parts}


def test_the_plan_targets_the_files_the_epic_names(repo):
    tracks, plans = plan(repo)
    [core] = tracks.tracks
    assert "util.py" in core.goal and "tests/test_util.py" in core.goal
    tickets = [k for p in plans for k in p.tickets]
    targets = [f for k in tickets for f in k.target_files]
    assert targets == ["util.py", "tests/test_util.py"]
    code, test = tickets
    assert "multiply" in code.description and code.depends_on == []
    assert "app.py" in code.context_requirements          # it imports util.py: read it first
    assert test.depends_on == [code.id] and "multiply" in test.description
    assert not any(f.startswith("src/") for f in targets)


def test_the_workers_add_multiply_to_util_and_a_test_keeping_every_line(repo):
    before = dirs(repo)
    _, plans = plan(repo)
    for ticket in [k for p in plans for k in p.tickets]:
        session, final = run_worker(repo, ticket)
        assert "Problems" not in final, final
        # existing files are edited in place, never overwritten whole
        assert not any(n == "write_file" for n, a in tool_calls(session)), tool_calls(session)
    util = (repo / "util.py").read_text()
    assert util.startswith(UTIL)                         # every existing line kept, in place
    mod = load(repo / "util.py", "util")
    assert mod.multiply(3, 4) == 12 and mod.multiply(-2, 5) == -10
    assert mod.add(2, 3) == 5 and mod.scale_vector([1, 2], 3) == [3, 6]
    tests = (repo / "tests/test_util.py").read_text()
    assert "from util import add, scale_vector, multiply\n" in tests
    assert "def test_multiply():" in tests and "def test_scale_vector():" in tests
    assert dirs(repo) == before                          # no new package, no new folder
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_util.py"], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout + run.stderr


def test_without_the_file_text_the_worker_reads_the_file_first(repo):
    from models import Ticket
    ticket = Ticket(id="T-007", description="Add multiply(x, y) to util.py",
                    target_files=["util.py"])
    session, _ = run_worker(repo, ticket, with_files=False)
    calls = tool_calls(session)
    reads = [i for i, (n, a) in enumerate(calls) if n == "read_file" and a["path"] == "util.py"]
    edits = [i for i, (n, a) in enumerate(calls) if n == "edit_file" and a["path"] == "util.py"]
    assert reads and edits and reads[0] < edits[0]
    mod = load(repo / "util.py", "util_read_first")
    assert mod.multiply(6, 7) == 42 and mod.add(1, 1) == 2
    assert (repo / "util.py").read_text().startswith(UTIL)


def test_a_function_goes_above_the_main_guard(repo):
    from models import Ticket
    ticket = Ticket(id="T-008", description="Add square(n) to app.py", target_files=["app.py"])
    run_worker(repo, ticket)
    text = (repo / "app.py").read_text()
    assert text.index("def square(n):") < text.index('if __name__ == "__main__":')
    for line in APP.splitlines():
        assert line in text.splitlines()
    compile(text, "app.py", "exec")


@pytest.mark.parametrize("description, expected", [
    ("Write the release notes for the 1.2 release", None),
    ("Update README.md with the install steps", "README.md"),
    ("Add clamp(value, low, high) to util.py", "util.py"),
])
def test_a_task_with_no_target_files_changes_exactly_one_sensible_file(repo, description,
                                                                        expected):
    from models import Ticket
    (repo / "README.md").write_text("# Demo\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"],
                   cwd=repo, check=True)
    ticket = Ticket(id="RN-004", description=description + "\n    - say what changed",
                    target_files=[])
    run_worker(repo, ticket)
    status = subprocess.run(["git", "status", "--porcelain", "-uall"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(status) == 1, status
    path = status[0][3:]
    assert not path.startswith((".clutch", ".git", "conductor"))
    if expected is None:
        assert path == "notes/rn-004-release-notes-1-2.md"
        text = (repo / path).read_text()
        assert "Write the release notes" in text and "say what changed" in text
    else:
        assert path == expected
    if expected == "util.py":
        mod = load(repo / "util.py", "util_clamp")
        assert mod.clamp(5, 0, 3) == 3 and mod.clamp(-1, 0, 3) == 0
    if expected == "README.md":
        text = (repo / "README.md").read_text()
        assert text.startswith("# Demo\n") and "## Update README.md with the install steps" in text


def test_a_task_naming_the_conductor_plan_does_not_write_it(repo):
    from models import Ticket
    (repo / "conductor").mkdir()
    (repo / "conductor/plan.md").write_text("# Plan\n")
    ticket = Ticket(id="T-010", description="Tidy conductor/plan.md and .clutch/config.toml",
                    target_files=[])
    _, final = run_worker(repo, ticket)
    assert (repo / "conductor/plan.md").read_text() == "# Plan\n"
    assert not (repo / ".clutch").exists()
    assert (repo / "notes/t-010-tidy-conductor-plan-md.md").exists(), final


def test_the_worker_is_deterministic(repo, tmp_path):
    from models import Ticket
    import shutil
    other = tmp_path / "copy"
    shutil.copytree(repo, other)
    ticket = Ticket(id="T-001", description="Add multiply() to util.py",
                    target_files=["util.py", "tests/test_util.py"])
    a, _ = run_worker(repo, ticket)
    b, _ = run_worker(other, ticket)
    assert [m.to_dict() for m in a.history] == [m.to_dict() for m in b.history]
    assert (repo / "util.py").read_text() == (other / "util.py").read_text()


def test_a_new_file_beside_related_code_without_a_map_keeps_the_old_flow(repo):
    """No map in the request (the older WORKSPACE FILES form): tracks and tickets as before."""
    system, user = prompts.tier1_messages("Build a CLI", "README.md")
    req = ModelRequest(tier="Tier 1", model="offline", system=system,
                       messages=[Message(role="user", text=user)])
    tracks = EpicPlan.model_validate_json(OfflineProvider(pace_s=0).generate(
        req, lambda s: None).text)
    assert len(tracks.tracks) >= 2
    system, user = prompts.tier2_messages("Core: Build a CLI", "g", ["c"], 1, "README.md")
    req = ModelRequest(tier="Tier 2", model="offline", system=system,
                       messages=[Message(role="user", text=user)])
    tickets = TrackPlan.model_validate_json(OfflineProvider(pace_s=0).generate(
        req, lambda s: None).text).tickets
    assert tickets[0].target_files == ["src/core_cli/__init__.py"]   # as before: no map


def test_a_new_module_goes_beside_related_code_never_a_made_up_package(repo):
    (repo / "pkg").mkdir()
    (repo / "pkg/__init__.py").write_text("")
    (repo / "pkg/shapes.py").write_text("def area(w, h):\n    return w * h\n")
    tracks, plans = plan(repo, "Add a perimeter() helper for shapes with tests")
    targets = [f for p in plans for k in p.tickets for f in k.target_files]
    assert "pkg/perimeter.py" in targets and "tests/test_perimeter.py" in targets
    assert all("/" not in f or f.split("/")[0] in ("pkg", "tests") for f in targets)


def test_a_new_module_and_its_new_test_pass_together(repo):
    (repo / "pkg").mkdir()
    (repo / "pkg/__init__.py").write_text("")
    (repo / "pkg/shapes.py").write_text("def area(w, h):\n    return w * h\n")
    _, plans = plan(repo, "Add a factorial(n) helper beside the shapes code, with tests")
    for ticket in [k for p in plans for k in p.tickets]:
        _, final = run_worker(repo, ticket)
        assert "Problems" not in final, final
    assert load(repo / "pkg/factorial.py", "pkg_factorial").factorial(5) == 120
    test = (repo / "tests/test_factorial.py").read_text()
    assert "from pkg.factorial import factorial\n" in test
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_factorial.py"], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_a_file_it_cannot_edit_is_left_alone_and_said_so(repo):
    from models import Ticket
    (repo / "data.json").write_text('{"a": 1}\n')
    ticket = Ticket(id="T-011", description="Add a b key to data.json",
                    target_files=["data.json"])
    session, final = run_worker(repo, ticket)
    assert (repo / "data.json").read_text() == '{"a": 1}\n'
    assert "data.json: left alone" in final
    assert not any(n in ("write_file", "edit_file") for n, _ in tool_calls(session))


@pytest.mark.parametrize("ending", ["", "\n\n\n", "crlf"])
def test_the_edit_matches_the_file_however_it_ends(repo, ending):
    """A FILE section does not say how the file ends (no final newline, blank lines, CRLF):
    the edit still matches, and the file keeps its own ending."""
    from models import Ticket
    text = UTIL.rstrip("\n") + ending if ending != "crlf" else UTIL.replace("\n", "\r\n")
    (repo / "util.py").write_bytes(text.encode())
    ticket = Ticket(id="T-012", description="Add multiply() to util.py",
                    target_files=["util.py"])
    _, final = run_worker(repo, ticket)
    assert "Problems" not in final, final
    after = (repo / "util.py").read_bytes().decode()
    assert after.startswith(text.rstrip("\r\n"))
    if ending == "crlf":
        assert after.endswith("return a * b\r\n") and "\n" not in after.replace("\r\n", "")
    else:
        assert after.endswith("return a * b" + ending)
    assert load(repo / "util.py", f"util_end{len(ending)}").multiply(2, 3) == 6


def test_a_long_file_is_read_to_its_end_and_appended_to(repo):
    """A file longer than one read_file answer: the worker reads its last lines and appends
    after them; every line of the file stays."""
    from models import Ticket
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(700))
    (repo / "big.py").write_text(body + "def add(a, b):\n    return a + b\n")
    ticket = Ticket(id="T-013", description="Add multiply() to big.py", target_files=["big.py"])
    session, final = run_worker(repo, ticket)
    assert "Problems" not in final, final
    reads = [a for n, a in tool_calls(session) if n == "read_file" and a["path"] == "big.py"]
    assert len(reads) == 2 and reads[1]["offset"] > 2000
    text = (repo / "big.py").read_text()
    assert text.startswith(body) and text.endswith("    return a * b\n")
    mod = load(repo / "big.py", "big")
    assert mod.multiply(3, 5) == 15 and mod.f699(1) == 700


def test_the_older_ticket_prompt_edits_an_existing_target_in_place(repo):
    """The engine's older request (tier3_prompt + tier3_context, no FILE sections): the worker
    reads the target first and edits it; it never overwrites a file that is there."""
    prompt = prompts.tier3_prompt("T-014", "Add multiply() to util.py", "Core", ["util.py"], [])
    text = prompt + "\n" + prompts.tier3_context(["app.py"])
    ws = Workspace(repo, sandbox="none")
    session = AgentSession(OfflineProvider(pace_s=0), tier="Tier 3", model="offline",
                           stream_id="Tier 3 (Worker): T-014", system=prompts.TIER3_SYSTEM,
                           comms=CommsLog(), price=Price(), ticket_id="T-014", tools=TOOL_SPECS,
                           tool_handler=lambda c: ToolOutcome(
                               ws.execute(c.name, c.args).to_dict(), c.args))
    final = session.send(text)
    assert "Problems" not in final, final
    assert not any(n == "write_file" for n, _ in tool_calls(session))
    assert (repo / "util.py").read_text().startswith(UTIL)
    assert load(repo / "util.py", "util_old_prompt").multiply(2, 2) == 4


def test_a_new_module_without_named_functions_is_named_for_the_task(repo):
    _, plans = plan(repo, "Add a health endpoint and its tests")
    targets = [f for p in plans for k in p.tickets for f in k.target_files]
    assert targets == ["health_endpoint.py", "tests/test_health_endpoint.py"]


def test_a_task_with_no_target_files_writes_its_notes_under_docs_when_there_is_one(repo):
    from models import Ticket
    (repo / "docs").mkdir()
    (repo / "docs/guide.md").write_text("# Guide\n")
    ticket = Ticket(id="GO-003", description="Define the HUD theme types\n"
                    "    - Create a module for UI definitions (`Pomo.Core/Domain/UI.fs` or similar)",
                    target_files=[])
    session, final = run_worker(repo, ticket)
    written = [a["path"] for n, a in tool_calls(session) if n == "write_file"]
    assert written == ["docs/go-003-define-hud-theme-types.md"], final
    text = (repo / written[0]).read_text()
    assert "# Define the HUD theme types" in text and "Pomo.Core/Domain/UI.fs" in text
    assert not (repo / "Pomo.Core").exists()
