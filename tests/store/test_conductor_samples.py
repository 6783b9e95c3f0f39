"""Real Conductor projects (../shared/conductor-samples/, read-only test data): each one listed as
an independent reading of the format rules says, saved with no change byte for byte, and run
(tasks started, ticked with a SHA, a phase checkpointed, the track's status moved) changing
only the lines a run may change."""
from __future__ import annotations

import difflib
import json
import re
import shutil
from pathlib import Path

import pytest

from conductor_store import ConductorStore



def _samples_dir() -> Path:
    """../shared/conductor-samples beside the repository; from a git worktree, beside its main
    checkout (a worktree's .git is a file naming <main>/.git/worktrees/<name>)."""
    root = Path(__file__).resolve().parents[2]
    cands = [root.parent / "shared" / "conductor-samples"]
    dot_git = root / ".git"
    if dot_git.is_file():
        gitdir = Path(dot_git.read_text().split("gitdir:", 1)[1].strip())
        main = gitdir.parents[2] if gitdir.parent.name == "worktrees" else gitdir.parent
        cands.append(main.parent / "shared" / "conductor-samples")
    return next((c for c in cands if c.is_dir()), cands[0])


SAMPLES = _samples_dir()
NAMES = ["Kipo", "Luna", "password-exchange", "ParrotInk", "lifx-async"]



def _copy(tmp_path: Path, name: str) -> Path:
    assert (SAMPLES / name).is_dir(), f"missing test data {SAMPLES / name} (../shared/conductor-samples)"
    dest = tmp_path / name
    shutil.copytree(SAMPLES / name, dest)
    return dest


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# an independent reading, straight from the README's rules (no code shared with the store)
# ---------------------------------------------------------------------------------------------

_MARK = {" ": "new", "~": "in_progress", "x": "completed", "X": "completed"}
_TASK_MARK = {" ": "todo", "~": "in_progress", "x": "completed", "X": "completed"}
_CHECKBOX = re.compile(r"^(\s*)[-*+]\s+\[([ xX~])\]\s")
_SHA_END = re.compile(r"(?:\[([0-9a-f]{7,40})\]|\(([0-9a-f]{7,40})\)|`([0-9a-f]{7,40})`|\s([0-9a-f]{7,40}))"
                      r"(?:\s+\([^()]*\))?\s*$")


def read_registry(text: str) -> tuple[dict[str, str], list[str]]:
    """track id -> status for live (not archived) entries; ids of entries in order."""
    status: dict[str, str] = {}
    order: list[str] = []
    marker = None
    for line in text.splitlines():
        m = re.match(r"^\s*(?:[-*+]|#{2,6})\s+\[([ xX~])\]\s+(?:\*\*)?Track:", line) or \
            re.match(r"^\s*\|\s*\[([ xX~])\]\s*\|", line)
        if m:
            marker = m.group(1)
        if line.strip() == "---":
            marker = None
        link = re.search(r"\]\((?:\./)?(?:conductor/)?tracks/([^/)_][^/)]*)/", line)
        if link and marker is not None:
            status[link.group(1)] = _MARK[marker]
            order.append(link.group(1))
            marker = None
    return status, order


def read_plan(text: str) -> list[tuple[str, str]]:
    """(status, sha) of each top-level task: a checkbox line not indented under another task."""
    out: list[tuple[str, str]] = []
    top: int | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _CHECKBOX.match(line)
        indent = len(line) - len(line.lstrip())
        if m:
            if top is None or indent <= top:
                top = indent
                status = _TASK_MARK[m.group(2)]
                sm = _SHA_END.search(line.rstrip())
                sha = ""
                if sm:
                    bare = sm.group(4)
                    sha = sm.group(1) or sm.group(2) or sm.group(3) or (bare if status != "todo" else "")
                out.append((status, sha))
        elif indent <= (top if top is not None else 0):
            top = None      # a heading or a paragraph ends the task
    return out


def independent(root: Path) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    conductor = root / "conductor"
    reg = (conductor / "tracks.md").read_text(encoding="utf-8") if (conductor / "tracks.md").exists() else ""
    reg_status, _ = read_registry(reg)
    out = {}
    for folder in sorted((conductor / "tracks").iterdir()):
        if not folder.is_dir() or folder.name.startswith(("_", ".")) or not (folder / "plan.md").exists():
            continue
        status = reg_status.get(folder.name)
        if status is None:
            meta = folder / "metadata.json"
            status = json.loads(meta.read_text()).get("status", "new") if meta.exists() else "new"
        out[folder.name] = (status, read_plan((folder / "plan.md").read_text(encoding="utf-8")))
    return out


def listing(store: ConductorStore) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    tracks, _ = store.load_tracks()
    return {t.id: (t.status, [(k.status, k.commit_sha) for k in t.tickets]) for t in tracks}


# ---------------------------------------------------------------------------------------------
# a run: what it may change
# ---------------------------------------------------------------------------------------------

def changed_lines(before: bytes, after: bytes) -> list[tuple[str, str]]:
    a, b = before.decode().split("\n"), after.decode().split("\n")
    assert len(a) == len(b), "a run adds or removes no line in a file someone else wrote"
    return [(x, y) for x, y in zip(a, b) if x != y]


def only_marker_and_sha(old: str, new: str) -> bool:
    """`new` is `old` with its first [.] marker changed and, at most, a short SHA appended."""
    m_old = re.match(r"^(\s*[-*+]\s+\[)(.?)(\].*)$", old)
    m_new = re.match(r"^(\s*[-*+]\s+\[)(.?)(\].*)$", new)
    if not (m_old and m_new) or m_old.group(1) != m_new.group(1):
        return False
    rest_old, rest_new = m_old.group(3), m_new.group(3)
    return rest_new == rest_old or re.fullmatch(
        re.escape(rest_old.rstrip()) + r" (?:[0-9a-f]{7}|\[[0-9a-f]{7}\]|\([0-9a-f]{7}\)|`[0-9a-f]{7}`)",
        rest_new.rstrip()) is not None


def sha_form(line: str) -> str:
    """The form of the short SHA at the end of a task line: bare, [], (), `` or ""."""
    m = re.search(r"(?:\[([0-9a-f]{7,40})\]|\(([0-9a-f]{7,40})\)|`([0-9a-f]{7,40})`|\s([0-9a-f]{7,40}))"
                  r"(?:\s+\([^()]*\))?\s*$", line.rstrip())
    if not m:
        return ""
    return ["[]", "()", "``", "bare"][next(i for i in range(4) if m.group(i + 1))]


def only_the_marker(old: str, new: str) -> bool:
    """One character changed, and it is the one between a [ and a ]."""
    diff = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    return (len(old) == len(new) and len(diff) == 1 and 0 < diff[0] < len(old) - 1
            and old[diff[0] - 1] == "[" and old[diff[0] + 1] == "]")


def pick_open_track(store: ConductorStore):
    tracks, _ = store.load_tracks()
    for t in tracks:
        if t.status != "completed" and any(k.status != "completed" and not k.checkpoint for k in t.tickets):
            return t
    return None


@pytest.mark.parametrize("name", NAMES)
def test_listing_equals_an_independent_reading(tmp_path: Path, name: str):
    root = _copy(tmp_path, name)
    before = _files(root)
    store = ConductorStore(root)
    got = listing(store)
    want = independent(root)
    assert got.keys() == want.keys()
    for tid in want:
        assert got[tid][0] == want[tid][0], (tid, "status")
        assert [s for s, _ in got[tid][1]] == [s for s, _ in want[tid][1]], (tid, "tasks")
        assert [sha for _, sha in got[tid][1]] == [sha for _, sha in want[tid][1]], (tid, "shas")
    assert _files(root) == before            # listing never writes


@pytest.mark.parametrize("name", NAMES)
def test_a_save_with_no_change_is_byte_identical(tmp_path: Path, name: str):
    root = _copy(tmp_path, name)
    before = _files(root)
    store = ConductorStore(root)
    store.ensure_layout()                    # what the engine does first
    tracks, _ = store.load_tracks()
    for t in tracks:
        store.save_track(t)
    after = _files(root)
    added = sorted(set(after) - set(before))
    assert all(p.endswith("/state.toml") or p.startswith(".clutch/") for p in added), added
    assert {p: after[p] for p in before} == before
    assert not (root / "conductor" / "index.md").exists() or "conductor/index.md" in before
    # and what was saved reads back the same
    again, _ = ConductorStore(root).load_tracks()
    assert {t.id: t.tickets for t in again} == {t.id: t.tickets for t in tracks}
    assert {t.id: t.status for t in again} == {t.id: t.status for t in tracks}


@pytest.mark.parametrize("name", NAMES)
def test_a_run_changes_only_the_allowed_lines(tmp_path: Path, name: str):
    root = _copy(tmp_path, name)
    before = _files(root)
    store = ConductorStore(root)
    store.ensure_layout()
    track = pick_open_track(store)
    assert track is not None, "each sample has an open track with worker tasks"
    work = [k for k in track.tickets if k.status != "completed" and not k.checkpoint][:2]
    track.status = "in_progress"
    for k in work:
        k.status = "in_progress"
        store.save_track(track)
        k.status = "completed"
        k.commit_sha = "0123456789abcdef0123456789abcdef01234567"
        store.save_track(track)
    phase = work[0].phase
    checkpointed = bool(phase) and store.checkpoint_phase(track.id, phase, "fedcba9876543210")
    after = _files(root)

    folder = f"conductor/tracks/{track.id}/"
    for path, data in before.items():
        if after[path] == data:
            continue
        lines = changed_lines(data, after[path])
        if path == folder + "plan.md":
            ticks = [(o, n) for o, n in lines if not n.lstrip().startswith("#")]
            heads = [(o, n) for o, n in lines if n.lstrip().startswith("#")]
            assert len(ticks) == len(work) and all(only_marker_and_sha(o, n) for o, n in ticks), \
                "\n".join(difflib.unified_diff([o for o, _ in lines], [n for _, n in lines], lineterm=""))
            assert len(heads) == (1 if checkpointed else 0)
            # the SHA in the form the plan already uses (bare, the extension's, if it has none)
            forms = [f for f in (sha_form(o) for o in data.decode().split("\n")
                                 if re.match(r"^\s*[-*+]\s+\[[xX]\]", o)) if f]
            want = max(set(forms), key=forms.count) if forms else "bare"
            if len(set(forms)) < 2 or forms.count(want) > max(forms.count(f) for f in set(forms) - {want}):
                assert {sha_form(n) for _, n in ticks} == {want}, (ticks, want)
            for o, n in heads:
                assert n == o.rstrip() + " [checkpoint: fedcba9]" + o[len(o.rstrip()):]
        elif path == "conductor/tracks.md":
            assert len(lines) == 1 and only_the_marker(*lines[0]), lines
        elif path == folder + "metadata.json":
            for o, n in lines:
                assert re.match(r'^\s*"(status|updated_at)"\s*:', o) and o.split(":")[0] == n.split(":")[0]
            assert list(json.loads(after[path])) == list(json.loads(data))     # keys and order kept
        else:
            pytest.fail(f"{path} changed: a run may not touch it")
    added = set(after) - set(before)
    assert all(p.endswith("/state.toml") or p.startswith(".clutch/") for p in added), added
    # what the run did reads back: ticked with the SHA, the track in progress
    again, _ = store.load_track(track.id)
    for k in work:
        got = again.ticket(k.id)
        assert got.status == "completed" and got.commit_sha.startswith("0123456")
    assert again.status == "in_progress"
