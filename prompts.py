"""The tiers' prompt templates, kept out of logic.

The section markers ("EPIC:", "TRACK:", "TICKET ...", "TARGET FILES:", "REPOSITORY MAP:") are part
of the contract with the offline model, which reads them the way a real model would read the prose.

Threads: any (pure functions). State: none. Imports only models (for `ContextSection`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from models import ContextSection

TIER1_SYSTEM = """You are Tier 1, the orchestrator of a team of coding agents.
Turn the user's epic into independent tracks of work. Each track has a short title, a goal
(one paragraph) and acceptance criteria (a list of checkable statements). Tracks must be
independent enough to be planned and run separately. Propose between 1 and 6 tracks.
Answer with JSON only, matching the schema: {"tracks": [{"title", "goal", "acceptance_criteria": [..]}]}."""

TIER1_USER = """EPIC:
{epic}

WORKSPACE FILES (top level):
{listing}
"""

TIER2_SYSTEM = """You are Tier 2, the tech lead. Turn one track into tickets that a stateless
worker can each finish alone with file and shell tools. Give every ticket an id, a one-paragraph
description, the target files it will create or change, context requirements (files to read
first), and depends_on (ids of tickets that must finish first). Tickets that do not depend on
each other run in parallel, so two tickets that may run in parallel must not target the same
file. Answer with JSON only, matching the schema: {{"tickets": [{{"id", "description",
"target_files": [..], "context_requirements": [..], "depends_on": [..]}}]}}.
Number ticket ids T-{first_number:03d}, T-{second_number:03d}, ... in order."""

TIER2_USER = """TRACK: {title}
GOAL:
{goal}

ACCEPTANCE CRITERIA:
{criteria}

FIRST TICKET NUMBER: {first_number}

WORKSPACE FILES (top level):
{listing}
"""

TIER3_SYSTEM = """You are a Tier 3 worker: a careful software engineer with tools to read, list,
search, write and edit files and run shell commands inside the workspace. You have no memory of
other tickets. Do exactly the ticket, nothing more. Read before you edit. Use edit_file for small
changes (the old text must match exactly). Run one shell command to check your work. When you are
done, answer with a short summary of what you changed and how you checked it."""

TIER3_USER = """TICKET {ticket_id}: {description}

TRACK: {track_title}
TARGET FILES: {target_files}
DEPENDS ON (already done): {depends_on}
"""

TIER3_CONTEXT = """CONTEXT FILES:
{context_files}
"""

TIER4_SYSTEM = """You are Tier 4, QA. You read a failure (a failed command and its output, or an
error trace) and answer with a short diagnosis: the most likely cause in one sentence, then at most
three concrete next steps. You fix nothing yourself."""

TIER4_USER = """FAILURE IN TICKET {ticket_id}:
{what}

OUTPUT:
{output}
"""

TIER2_READ_SYSTEM = """Before you plan, you may read the workspace with the read-only tools
(read_file, list_dir, search_files) for at most {rounds} rounds. Read only what the plan depends on
(the files the track names, their callers, their tests). Then answer in plain text, without
tools: notes for planning, naming the files to change or create and what each holds now."""

TIER2_READ_USER = """Read what you need, then answer with your notes (not the JSON plan yet)."""

TIER2_NOTES_HEADING = "TECH LEAD'S NOTES FROM READING THE CODE"

REPAIR_USER = """Your previous answer was not valid: {error}
Answer again with JSON only, matching the schema exactly."""

STEP_CONTINUE = "Continue with the next step of the ticket."


def tier1_messages(epic: str, listing: str) -> tuple[str, str]:
    return TIER1_SYSTEM, TIER1_USER.format(epic=epic.strip(), listing=listing or "(empty)")


def tier2_messages(title: str, goal: str, criteria: list[str], first_number: int,
                   listing: str) -> tuple[str, str]:
    system = TIER2_SYSTEM.format(first_number=first_number, second_number=first_number + 1)
    user = TIER2_USER.format(title=title, goal=goal,
                             criteria="\n".join(f"- {c}" for c in criteria) or "- (none)",
                             first_number=first_number, listing=listing or "(empty)")
    return system, user


def tier3_prompt(ticket_id: str, description: str, track_title: str, target_files: list[str],
                 depends_on: list[str]) -> str:
    return TIER3_USER.format(ticket_id=ticket_id, description=description.strip(),
                             track_title=track_title,
                             target_files=", ".join(target_files) or "(none named)",
                             depends_on=", ".join(depends_on) or "(none)")


def tier3_context(context_files: list[str]) -> str:
    if not context_files:
        return ""
    return TIER3_CONTEXT.format(context_files="\n".join(f"- {c}" for c in context_files))


REPAIR_SECTION = """REPAIR, ATTEMPT {attempt}: a previous worker did this ticket, and its work is
still in your working tree, but the checks refused it.
CHECKS:
{check}
TIER 4'S DIAGNOSIS:
{diagnosis}
Fix what the checks refused (read the files first; change what is wrong, keep what is right),
then answer with a short summary."""

CONFLICT_USER = """TICKET {ticket_id}: {description}
Your working tree holds a merge of this ticket's change into the track branch {branch}, and it
conflicts in: {paths}. The conflicting files contain git conflict markers (<<<<<<<, =======,
>>>>>>>). Resolve every conflict so that BOTH sides' intent is kept (never drop a side: the
track branch's version is already merged work of other tickets), remove every marker, and
answer with a short summary of how you combined them."""


def repair_section(attempt: int, check: str, diagnosis: str) -> str:
    return REPAIR_SECTION.format(attempt=attempt, check=check.strip()[-4000:] or "(no report)",
                                 diagnosis=diagnosis.strip() or "(no diagnosis)")


def conflict_prompt(ticket_id: str, description: str, branch: str, paths: list[str]) -> str:
    return CONFLICT_USER.format(ticket_id=ticket_id, description=description.strip(),
                                branch=branch, paths=", ".join(paths))


def tier4_messages(ticket_id: str, what: str, output: str) -> tuple[str, str]:
    return TIER4_SYSTEM, TIER4_USER.format(ticket_id=ticket_id, what=what,
                                           output=output[-6000:] or "(no output)")


# ---------------------------------------------------------------------------------------------
# Context sections (issue 19): each tier's request as labelled parts with token counts, shared
# parts first (system prompt, project documents, the map) so providers' prompt caches reuse
# them, the specific part (epic, track, ticket, failure) last. Each section's text carries its
# own heading, so what the person sees and edits in the spawn dialog is exactly what is sent.
# ---------------------------------------------------------------------------------------------

MAP_HEADING = "REPOSITORY MAP"
EMPTY_MAP = "(no files yet: the workspace is empty)"
SPECIFIC_KINDS = frozenset({"epic", "track", "ticket", "failure"})

# Tier 2's system prompt without the ticket numbers in it (they vary per track and would make
# every Tier 2 request's prefix different); the numbering is in the track section instead.
TIER2_SECTIONS_SYSTEM = TIER2_SYSTEM.split("\nNumber ticket ids")[0] + (
    "\nNumber ticket ids T-NNN in order, starting from the FIRST TICKET NUMBER given.")


def make_section(label: str, kind: str, text: str, *, path: str | None = None,
                 shared: bool = False) -> ContextSection:
    return ContextSection(label=label, kind=kind, text=text, path=path,  # type: ignore[arg-type]
                          shared=shared)


def _system(text: str) -> ContextSection:
    return make_section("System prompt", "system", text, shared=True)


def _documents(documents: Mapping[str, str]) -> list[ContextSection]:
    return [make_section(f"Project document: {path}", "document",
                         f"PROJECT DOCUMENT {path}:\n{text.rstrip()}\n", path=path, shared=True)
            for path, text in documents.items()]


def map_section(repo_map: str, *, shared: bool, focus: str = "") -> ContextSection:
    """The repository map as a section: 'REPOSITORY MAP:' then the map (one paragraph)."""
    label = f"Repository map{f' ({focus})' if focus else ''}"
    return make_section(label, "map", f"{MAP_HEADING}:\n{repo_map.rstrip() or EMPTY_MAP}\n",
                        shared=shared)


def tier1_sections(epic: str, repo_map: str, documents: Mapping[str, str] | None = None
                   ) -> list[ContextSection]:
    """Tier 1: system prompt, the project's documents, the map (ranked for the epic), the epic."""
    return [_system(TIER1_SYSTEM), *_documents(documents or {}),
            map_section(repo_map, shared=True, focus="ranked for the epic"),
            make_section("Epic", "epic", f"EPIC:\n{epic.strip()}\n")]


def tier2_sections(title: str, goal: str, criteria: Sequence[str], first_number: int,
                   repo_map: str, documents: Mapping[str, str] | None = None
                   ) -> list[ContextSection]:
    """Tier 2: system prompt, documents (if given), the map focused on the track, the track."""
    track = TIER2_USER.split("\nWORKSPACE FILES")[0].format(
        title=title, goal=goal, criteria="\n".join(f"- {c}" for c in criteria) or "- (none)",
        first_number=first_number)
    return [_system(TIER2_SECTIONS_SYSTEM), *_documents(documents or {}),
            map_section(repo_map, shared=False, focus="focused on the track"),
            make_section(f"Track: {title}"[:300], "track", track)]


def tier3_sections(ticket_id: str, description: str, track_title: str,
                   target_files: Sequence[str], depends_on: Sequence[str], repo_map: str, *,
                   full_files: Mapping[str, str] | None = None,
                   skeletons: Mapping[str, str] | None = None,
                   context_files: Sequence[str] = (), missing: Sequence[str] = (),
                   map_shared: bool = False) -> list[ContextSection]:
    """Tier 3: system prompt, the map, each context file's skeleton, each (small) target file in
    full, then the ticket. Context files that do not exist are not listed for reading; the ticket
    says they are missing instead.

    The map is either focused on the ticket's files (the default: most relevant, but specific to
    the ticket, so only the system prompt is a cacheable prefix), or, with map_shared=True, one
    map the caller renders once per track (focused on the track): then every ticket of the track
    shares system prompt + map as a prefix, and the ticket's own files follow as sections."""
    focus = "focused on the track" if map_shared else "focused on the ticket's files"
    sections = [_system(TIER3_SYSTEM), map_section(repo_map, shared=map_shared, focus=focus)]
    for path, text in (skeletons or {}).items():
        sections.append(make_section(f"Skeleton: {path}", "skeleton",
                                     f"SKELETON {path}:\n{text.rstrip()}\n", path=path))
    for path, text in (full_files or {}).items():
        sections.append(make_section(f"File: {path}", "file",
                                     f"FILE {path}:\n{text.rstrip()}\n", path=path))
    absent = set(missing)
    ticket = tier3_prompt(ticket_id, description, track_title, list(target_files),
                          list(depends_on))
    ticket += tier3_context([c for c in context_files if c not in absent])
    named_missing = [m for m in missing if m not in target_files]
    if named_missing:
        ticket += ("NOT IN THE WORKSPACE (named as context, do not read): "
                   + ", ".join(named_missing) + "\n")
    sections.append(make_section(f"Ticket {ticket_id}", "ticket", ticket))
    return sections


def tier4_sections(ticket_id: str, what: str, output: str,
                   files: Mapping[str, str] | None = None) -> list[ContextSection]:
    """Tier 4: system prompt, the files the failure touches, the failure."""
    sections = [_system(TIER4_SYSTEM)]
    for path, text in (files or {}).items():
        sections.append(make_section(f"File: {path}", "file",
                                     f"FILE {path}:\n{text.rstrip()}\n", path=path))
    _, failure = tier4_messages(ticket_id, what, output)
    sections.append(make_section(f"Failure in {ticket_id}", "failure", failure))
    return sections


def notes_section(notes: str) -> ContextSection:
    """Tier 2's own notes from its reading round, as a section before the track."""
    return make_section("Tech lead's reading notes", "note",
                        f"{TIER2_NOTES_HEADING}:\n{notes.strip()}\n")


def render_sections(sections: Sequence[ContextSection]) -> tuple[str, str]:
    """(system, user) request text: the system sections joined, then every other section in
    order, separated by blank lines. Raises ValueError when there is no user part."""
    system = "\n\n".join(s.text.strip() for s in sections if s.kind == "system")
    user = "\n\n".join(s.text.strip("\n") for s in sections if s.kind != "system" and s.text)
    if not user.strip():
        raise ValueError("the context has no part besides the system prompt: nothing to ask")
    return system, user + "\n"


def shared_prefix_tokens(sections: Sequence[ContextSection]) -> int:
    """Tokens of the leading run of shared sections: what a prompt cache can reuse."""
    total = 0
    for s in sections:
        if not s.shared:
            break
        total += s.tokens
    return total


def section_summary(sections: Sequence[ContextSection]) -> list[dict[str, object]]:
    """Label, kind, path, tokens and shared of each section (what the comms log keeps of a
    context: the texts themselves are in the request beside it)."""
    return [{"label": s.label, "kind": s.kind, "path": s.path, "tokens": s.tokens,
             "shared": s.shared} for s in sections]


def without_file(sections: Sequence[ContextSection], path: str) -> list[ContextSection]:
    """The sections with one file taken out: its file/skeleton/document section, and its line
    in the ticket's CONTEXT FILES list (so the worker is not told to read it either).
    ValueError when no section or context line names that path."""
    kept = [s for s in sections if s.path != path]
    line = f"- {path}"
    out: list[ContextSection] = []
    touched = len(kept) != len(sections)
    for s in kept:
        if s.kind == "ticket" and line in s.text.splitlines():
            lines = [ln for ln in s.text.splitlines() if ln != line]
            if lines and lines[-1] == "CONTEXT FILES:":
                lines.pop()
            s = s.with_text("\n".join(lines) + "\n")
            touched = True
        out.append(s)
    if not touched:
        raise ValueError(f"{path} is not in this context")
    return out


def with_file(sections: Sequence[ContextSection], path: str, text: str, *,
              skeleton: bool = False) -> list[ContextSection]:
    """The sections with one file added (in full, or as a skeleton), just before the specific
    part (ticket, track, epic, failure); a section already there for that path is replaced."""
    if not path.strip():
        raise ValueError("a file added to the context needs a path")
    new = (make_section(f"Skeleton: {path}", "skeleton", f"SKELETON {path}:\n{text.rstrip()}\n",
                        path=path) if skeleton else
           make_section(f"File: {path}", "file", f"FILE {path}:\n{text.rstrip()}\n", path=path))
    rest = [s for s in sections if s.path != path]
    at = next((i for i, s in enumerate(rest) if s.kind in SPECIFIC_KINDS), len(rest))
    return [*rest[:at], new, *rest[at:]]


class MapFile(NamedTuple):
    path: str
    reason: str
    signatures: tuple[str, ...]


def parse_map(user_text: str) -> list[MapFile]:
    """The files of the REPOSITORY MAP section of a rendered request, in map order, with why
    each is there ('named by the task', 'imports util.py', ...) and its definitions' lines.
    For a model that reads the request as text (the offline model); [] when there is no map."""
    lines = user_text.splitlines()
    try:
        start = lines.index(f"{MAP_HEADING}:") + 1
    except ValueError:
        return []
    files: list[MapFile] = []
    for ln in lines[start:]:
        if not ln.strip():
            break
        if ln.startswith(" "):
            if files:
                f = files[-1]
                files[-1] = f._replace(signatures=f.signatures + (ln.strip(),))
            continue
        if ln.startswith("(… ") or ln.startswith("(no files yet"):
            continue
        head, sep, tail = ln.partition(": (")
        if sep and tail.endswith(")"):
            files.append(MapFile(head, tail[:-1], ()))
        else:
            files.append(MapFile(ln[:-1] if ln.endswith(":") else ln, "", ()))
    return files


def task_files(user_text: str) -> list[str]:
    """The files the map of a rendered request marks as named by the task (the epic, track or
    ticket), in order: what a planner should target instead of inventing new paths."""
    return [f.path for f in parse_map(user_text) if f.reason == "named by the task"]
