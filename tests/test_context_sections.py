"""Context sections: each tier's request as labelled parts with token counts, shared parts
first, and the edits the spawn dialog makes (drop a file, add a file, edit a text)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pydantic
import pytest

import prompts
from models import ContextSection, estimate_tokens
from toolbox.repomap import RepoMap, failure_files, project_documents, ticket_files

EPIC = "Add multiply(a, b) to util.py with a test in tests/test_util.py"
FILES = {
    "util.py": "def add(a, b):\n    return a + b\n\n\ndef scale_vector(v, k):\n    return [x * k for x in v]\n",
    "app.py": "from util import add, scale_vector\n\n\ndef main():\n    return add(1, 2)\n",
    "tests/test_util.py": "from util import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    "conductor/product.md": "# Product\n\nA vector toolkit.\n",
    "README.md": "# Vectors\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel, text in FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        old = time.time() - 3600
        os.utime(p, (old, old))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def test_a_section_counts_its_tokens_and_an_edit_recounts():
    s = ContextSection(label="Ticket T-001", kind="ticket", text="x" * 10)
    assert s.tokens == 3 == estimate_tokens("x" * 10)
    edited = s.with_text("x" * 41)
    assert edited.tokens == 11 and s.tokens == 3            # frozen: the original is unchanged
    assert edited.model_dump()["tokens"] == 11              # the API and GUI see the count
    with pytest.raises(pydantic.ValidationError, match="kind"):
        ContextSection(label="x", kind="gossip", text="")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="label"):
        ContextSection(label="", kind="file", text="")


def test_tier1_has_documents_and_the_map_before_the_epic(repo):
    m = RepoMap(repo)
    secs = prompts.tier1_sections(EPIC, m.render(text=EPIC), project_documents(repo))
    assert [s.kind for s in secs] == ["system", "document", "document", "map", "epic"]
    assert [s.path for s in secs if s.kind == "document"] == ["conductor/product.md", "README.md"]
    assert [s.shared for s in secs] == [True, True, True, True, False]
    assert prompts.shared_prefix_tokens(secs) == sum(s.tokens for s in secs[:4])
    system, user = prompts.render_sections(secs)
    assert system == prompts.TIER1_SYSTEM
    assert user.index("REPOSITORY MAP:") < user.index("EPIC:")
    assert "def scale_vector(v, k)" in user
    assert user.rstrip().endswith(EPIC)
    assert prompts.parse_map(user)[0] == prompts.MapFile(
        "util.py", "named by the task", ("def add(a, b)", "def scale_vector(v, k)"))
    assert prompts.task_files(user) == ["util.py", "tests/test_util.py"]


def test_tier2_system_prompt_is_the_same_for_every_track(repo):
    m = RepoMap(repo)
    a = prompts.tier2_sections("Core", "Multiply", ["multiply exists"], 1, m.render(text="Core"))
    b = prompts.tier2_sections("Tests", "Test it", [], 7, m.render(text="Tests"))
    assert a[0] == b[0] and a[0].shared                     # a cacheable prefix across tracks
    assert [s.kind for s in a] == ["system", "map", "track"]
    assert "FIRST TICKET NUMBER: 7" in b[-1].text and "- (none)" in b[-1].text
    assert "T-NNN" in a[0].text and "{" not in a[0].text.replace("{{", "").split("JSON")[0]


def test_tier3_puts_the_ticket_last_and_never_asks_to_read_a_missing_file(repo):
    m = RepoMap(repo)
    targets, context = ["util.py", "tests/test_util.py"], ["app.py", "docs/guide.md"]
    tf = ticket_files(m, targets, context)
    secs = prompts.tier3_sections("T-001", "Add multiply(a, b)", "Core", targets, [],
                                  m.render(focus=targets), full_files=tf.full,
                                  skeletons=tf.skeletons, context_files=context,
                                  missing=tf.missing)
    assert [s.label for s in secs] == [
        "System prompt", "Repository map (focused on the ticket's files)", "Skeleton: app.py",
        "File: util.py", "File: tests/test_util.py", "Ticket T-001"]
    ticket = secs[-1].text
    assert "TARGET FILES: util.py, tests/test_util.py" in ticket
    assert "- app.py" in ticket and "- docs/guide.md" not in ticket
    assert "NOT IN THE WORKSPACE (named as context, do not read): docs/guide.md" in ticket
    _, user = prompts.render_sections(secs)
    assert user.index("FILE util.py:") < user.index("TICKET T-001:")
    assert "def scale_vector(v, k):\n    return" in user     # the small target in full


def test_dropping_and_adding_files_as_the_spawn_dialog_does(repo):
    m = RepoMap(repo)
    tf = ticket_files(m, ["util.py"], ["app.py"])
    secs = prompts.tier3_sections("T-002", "d", "Core", ["util.py"], [], m.render(),
                                  full_files=tf.full, skeletons=tf.skeletons,
                                  context_files=["app.py"])
    dropped = prompts.without_file(secs, "app.py")
    assert [s.path for s in dropped if s.path] == ["util.py"]
    assert "app.py" not in dropped[-1].text and "CONTEXT FILES" not in dropped[-1].text
    assert sum(s.tokens for s in dropped) < sum(s.tokens for s in secs)
    with pytest.raises(ValueError, match="nope.py is not in this context"):
        prompts.without_file(secs, "nope.py")
    added = prompts.with_file(dropped, "README.md", FILES["README.md"])
    assert [s.label for s in added][-2:] == ["File: README.md", "Ticket T-002"]
    again = prompts.with_file(added, "README.md", "x = 1", skeleton=True)
    assert [s.label for s in again].count("Skeleton: README.md") == 1
    assert "File: README.md" not in [s.label for s in again]
    with pytest.raises(ValueError, match="needs a path"):
        prompts.with_file(secs, " ", "x")


def test_tier4_has_the_files_the_failure_touches(repo):
    m = RepoMap(repo)
    out = f'  File "{repo}/app.py", line 5, in main\nNameError: name \'mul\' is not defined\n'
    secs = prompts.tier4_sections("T-003", "python -m pytest", out,
                                  failure_files(m, out, ["util.py"]))
    assert [s.label for s in secs] == ["System prompt", "File: app.py", "File: util.py",
                                       "Failure in T-003"]
    assert secs[-1].text.startswith("FAILURE IN TICKET T-003:")


def test_a_context_with_nothing_to_ask_is_refused():
    with pytest.raises(ValueError, match="nothing to ask"):
        prompts.render_sections([prompts.make_section("System prompt", "system", "x",
                                                      shared=True)])


def test_an_empty_workspace_says_so_in_the_map(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    secs = prompts.tier1_sections("Start a CLI", RepoMap(empty).render(), {})
    assert [s.kind for s in secs] == ["system", "map", "epic"]
    _, user = prompts.render_sections(secs)
    assert prompts.EMPTY_MAP in user and prompts.parse_map(user) == []


def test_parse_map_reads_paths_only_lines_and_the_footer(repo):
    m = RepoMap(repo)
    text = m.render(text=EPIC, budget_tokens=30)
    files = prompts.parse_map(f"REPOSITORY MAP:\n{text}\nEPIC:\nx\n")
    assert files[0].path == "util.py"
    assert [f.path for f in files] == [r.path for r in m.ranked(text=EPIC)][:len(files)]
    assert prompts.parse_map("no map here") == []


def test_existing_prompt_functions_are_unchanged():
    system, user = prompts.tier1_messages("e", "a.py")
    assert user == "EPIC:\ne\n\nWORKSPACE FILES (top level):\na.py\n"
    assert "T-001, T-002" in prompts.tier2_messages("t", "g", [], 1, "")[0]
