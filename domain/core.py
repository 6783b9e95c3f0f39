"""Tickets, tracks, their statuses and the rules for what a person may do with a ticket;
stream ids; the Tier 1/2 answer schemas.

Part of the models layer (door: models.py); imports nothing of ours but its siblings.
Pure data and functions: any thread, no state of its own.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TicketStatus = Literal["todo", "in_progress", "completed", "failed", "blocked", "skipped", "cancelled"]
TrackStatus = Literal["new", "planned", "in_progress", "paused", "completed", "failed", "cancelled",
                      "needs_attention"]
Tier = Literal["Tier 1", "Tier 2", "Tier 3", "Tier 4"]
TIERS: tuple[str, ...] = ("Tier 1", "Tier 2", "Tier 3", "Tier 4")

# A ticket in one of these states will not run again unless the user asks (retry).
TERMINAL_TICKET_STATES = frozenset({"completed", "failed", "blocked", "skipped", "cancelled"})
# Dependencies in these states let a dependent run.
SATISFIED_STATES = frozenset({"completed", "skipped"})


# ---------------------------------------------------------------------------------------------
# Stream ids (stable, tested; see DESIGN.md)
# ---------------------------------------------------------------------------------------------

def stream_tier1() -> str:
    return "Tier 1 (Orchestrator)"


def stream_tier2(track_id: str) -> str:
    return f"Tier 2 (Tech Lead): {track_id}"


def stream_tier3(ticket_id: str) -> str:
    return f"Tier 3 (Worker): {ticket_id}"


def stream_tier4(ticket_id: str) -> str:
    return f"Tier 4 (QA): {ticket_id}"


def tier_of_stream(stream_id: str) -> str:
    """"Tier 3 (Worker): T-001" -> "Tier 3"."""
    return stream_id.split(" (", 1)[0]


# ---------------------------------------------------------------------------------------------
# Tickets and tracks
# ---------------------------------------------------------------------------------------------

class Ticket(BaseModel):
    model_config = ConfigDict(validate_assignment=False)

    id: str
    description: str
    status: TicketStatus = "todo"
    assigned_to: str = ""
    target_files: list[str] = Field(default_factory=list)
    context_requirements: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    blocked_reason: str = ""
    step_mode: bool = False
    retry_count: int = 0
    model_override: str | None = None
    result: str = ""
    commit_sha: str = ""
    phase: str = ""
    # a plan's "User Manual Verification" task: a person checks the phase (no worker runs it);
    # approved -> a checkpoint commit, the task ticked, [checkpoint: sha] on the phase heading
    checkpoint: bool = False
    # worker sessions this run of the ticket has finished (1 + repairs); kept across a restart,
    # so a killed run resumes with the right attempt; the Retry action starts again at 0
    attempts: int = 0
    checks: str = ""         # the last checks' report: which passed, which failed and why
    diagnosis: str = ""      # Tier 4's diagnosis of the last failed check (the repair's brief)
    branch: str = ""         # the ticket's git branch while it has one (worktree mode)
    merge: str = ""          # how its commit reached the track branch, or why it did not

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("ticket id must not be empty")
        return v


class Track(BaseModel):
    id: str
    title: str
    goal: str = ""
    acceptance_criteria: list[str] = Field(default_factory=list)
    tickets: list[Ticket] = Field(default_factory=list)
    status: TrackStatus = "new"
    type: str = "feature"
    created_at: str = ""
    updated_at: str = ""
    problems: list[str] = Field(default_factory=list)  # load problems shown to the user
    branch: str = ""          # clutch/<track id> in a git workspace (worktree mode)
    merged_into: str = ""     # the person's branch it was merged into, once it was
    verify_command: str | None = None   # the track's own verify command (None: the setting's)

    def ticket(self, ticket_id: str) -> Ticket:
        for t in self.tickets:
            if t.id == ticket_id:
                return t
        raise KeyError(f"track {self.id} has no ticket {ticket_id!r}")

    def progress(self) -> tuple[int, int]:
        done = sum(1 for t in self.tickets if t.status in SATISFIED_STATES)
        return done, len(self.tickets)


# ---------------------------------------------------------------------------------------------
# Tier outputs (structured output schemas)
# ---------------------------------------------------------------------------------------------

class TrackProposal(BaseModel):
    """One track as Tier 1 proposes it."""
    title: str = Field(min_length=1, max_length=200)
    goal: str = Field(min_length=1)
    acceptance_criteria: list[str] = Field(min_length=1)


class EpicPlan(BaseModel):
    """Tier 1's whole answer."""
    tracks: list[TrackProposal] = Field(min_length=1, max_length=12)


class TicketProposal(BaseModel):
    """One ticket as Tier 2 proposes it."""
    id: str = Field(min_length=1, max_length=40)
    description: str = Field(min_length=1)
    target_files: list[str] = Field(default_factory=list)
    context_requirements: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)


class TrackPlan(BaseModel):
    """Tier 2's whole answer."""
    tickets: list[TicketProposal] = Field(min_length=1, max_length=200)



# ---------------------------------------------------------------------------------------------
# Ticket status rules: the one place that says what a person may do with a ticket
# ---------------------------------------------------------------------------------------------

TicketAction = Literal["retry", "skip", "cancel", "revert"]


def ticket_action_refusal(status: str, action: str, *, ticket_id: str = "ticket",
                          commit_sha: str = "") -> str | None:
    """Why `action` is not allowed on a ticket in `status` (a sentence), or None when it is.

    The engine raises it, the API answers it with 409, the GUI shows it as the tooltip of a
    greyed-out button and the CLI prints it: one rule, one sentence, everywhere."""
    if action == "retry":
        if status in RETRYABLE_STATES:
            return None
        return (f"{ticket_id} is {status}: only a failed, cancelled, blocked or skipped ticket "
                f"can be retried")
    if action == "skip":
        if status == "in_progress":
            return f"{ticket_id} is in_progress: cancel it first to skip it"
        if status == "completed":
            return f"{ticket_id} is already completed"
        if status == "skipped":
            return f"{ticket_id} is already skipped"
        return None
    if action == "cancel":
        if status in CANCELLABLE_STATES:
            return None
        return f"{ticket_id} is already {status}"
    if action == "revert":
        if status != "completed":
            return f"{ticket_id} is {status}: only a completed ticket can be reverted"
        if not commit_sha:
            return f"{ticket_id} has no commit to revert"
        return None
    raise ValueError(f"unknown ticket action {action!r}")


# A ticket in one of these states may be retried (back to todo, one more attempt).
RETRYABLE_STATES = frozenset({"failed", "cancelled", "blocked", "skipped"})
# A ticket in one of these states may be cancelled (a blocked one waits on a failure).
CANCELLABLE_STATES = frozenset({"todo", "in_progress", "blocked"})
# Dependencies in these states block their dependents.
BLOCKING_STATES = frozenset({"failed", "cancelled", "blocked"})


def can_retry(status: str) -> bool:
    return ticket_action_refusal(status, "retry") is None


def can_skip(status: str) -> bool:
    return ticket_action_refusal(status, "skip") is None


def can_cancel(status: str) -> bool:
    return ticket_action_refusal(status, "cancel") is None


def can_revert(status: str, commit_sha: str) -> bool:
    return ticket_action_refusal(status, "revert", commit_sha=commit_sha) is None
