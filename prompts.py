"""The tiers' prompt templates, kept out of logic.

The section markers ("EPIC:", "TRACK:", "TICKET ...", "TARGET FILES:") are part of the contract
with the offline model, which reads them the way a real model would read the prose.
"""
from __future__ import annotations

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


def tier4_messages(ticket_id: str, what: str, output: str) -> tuple[str, str]:
    return TIER4_SYSTEM, TIER4_USER.format(ticket_id=ticket_id, what=what,
                                           output=output[-6000:] or "(no output)")
