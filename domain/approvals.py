"""Approvals: one typed payload per kind, the Approved/Denied decisions, and the merge
of a person's edit over a request (edit_payload).

Part of the models layer (door: models.py); imports nothing of ours but its siblings.
Pure data and functions: any thread, no state of its own.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from domain.context import ContextSection

# ---------------------------------------------------------------------------------------------
# Approvals: requests, payloads and decisions are typed data
# ---------------------------------------------------------------------------------------------
# One payload class per kind, told apart by `kind` (as pydantic-ai's deferred tools tell
# ToolApproved from ToolDenied). The engine builds them, the GUI and the CLI edit them as typed
# objects, the API validates JSON against them. An edit is a partial dict merged over the
# request's payload by `edit_payload`, which refuses what may not change with a sentence.

ApprovalKind = Literal["spawn", "tool", "shell", "step", "budget", "checkpoint", "merge",
                       "repair"]


class ApprovalEditError(ValueError):
    """An edited payload the request cannot take; the approval stays pending."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Fields a person may change in the dialog; the rest are shown, not edited.
    EDITABLE: ClassVar[tuple[str, ...]] = ()

    def check_edit(self, original: "_Payload") -> None:
        """Refuse an edit that makes no sense for this kind (raises ApprovalEditError)."""


class SpawnPayload(_Payload):
    """A worker is about to start: its prompt, context and model are the person's to edit.

    With `sections` (issue 19) the worker's whole request is those labelled parts, in order
    (system prompt, the map focused on the ticket's files, file skeletons and small target
    files in full, the ticket last): the person drops, adds or edits sections, and what is
    approved is what the worker gets (`request_sections`). `prompt` is then the ticket
    section's text and `context` is empty; an edit of either (as older API clients send)
    rewrites the ticket section. Without sections, the worker gets `prompt` + `context`."""
    kind: Literal["spawn"] = "spawn"
    prompt: str
    context: str = ""
    model: str = ""
    description: str = ""           # the ticket's text, shown beside the prompt
    attempt: int = 1                # 2, 3, … for a repair session
    check: str = ""                 # a repair: the failed check's report
    diagnosis: str = ""             # a repair: Tier 4's diagnosis, the worker's brief (editable)
    sections: list[ContextSection] = Field(default_factory=list)
    EDITABLE: ClassVar[tuple[str, ...]] = ("prompt", "context", "model", "sections", "diagnosis")

    def check_edit(self, original: _Payload) -> None:
        if not self.prompt.strip():
            raise ApprovalEditError("the edited prompt is empty: a worker needs its ticket")
        if not isinstance(original, SpawnPayload) or self.sections == original.sections:
            return
        if ([s.text for s in self.sections if s.kind == "system"]
                != [s.text for s in original.sections if s.kind == "system"]):
            raise ApprovalEditError("the worker's system prompt is shown, not edited: change "
                                    "the other sections instead")
        if not any(s.kind != "system" and s.text.strip() for s in self.sections):
            raise ApprovalEditError("the edited context has nothing besides the system "
                                    "prompt: a worker needs its ticket")
        if (any(s.kind == "ticket" for s in original.sections)
                and not any(s.kind == "ticket" and s.text.strip() for s in self.sections)):
            raise ApprovalEditError("the edited context has no ticket section: a worker needs "
                                    "its ticket (edit its text instead of removing it)")

    def request_sections(self, original: "SpawnPayload | None" = None) -> list[ContextSection]:
        """The sections the worker is sent: these, with the ticket section rewritten when
        `prompt` or `context` differ from the original's (an edit of the prompt wins over an
        edit of the ticket section). [] when the spawn has no sections (prompt + context)."""
        if not self.sections:
            return []
        ref = original if original is not None else self
        if self.prompt == ref.prompt and self.context == ref.context:
            return list(self.sections)
        text = self.prompt.rstrip("\n") + "\n" + (self.context.rstrip("\n") + "\n"
                                                  if self.context.strip() else "")
        out = list(self.sections)
        at = next((i for i, s in enumerate(out) if s.kind == "ticket"), None)
        if at is None:
            out.append(ContextSection(label="Ticket", kind="ticket", text=text))
        else:
            out[at] = out[at].with_text(text)
        return out


class ToolPayload(_Payload):
    """A mutating file tool call; `args` is editable, the tool is not."""
    kind: Literal["tool"] = "tool"
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    preview: str = ""               # a unified diff of what the call would change
    EDITABLE: ClassVar[tuple[str, ...]] = ("args",)

    def check_edit(self, original: _Payload) -> None:
        if isinstance(original, ToolPayload) and self.tool != original.tool:
            raise ApprovalEditError(f"an approval cannot change which tool runs "
                                    f"({original.tool} → {self.tool}); reject it instead")


class ShellPayload(_Payload):
    """A shell command: the command and its folder are editable; `rule` says why it asks."""
    kind: Literal["shell"] = "shell"
    command: str
    cwd: str = "."
    timeout_s: float | None = None  # what the command will be given (the setting's, or less)
    rule: str = ""                  # the approval rule that matched, in words
    argument: str = ""              # the word of the command that rule is about, if any
    EDITABLE: ClassVar[tuple[str, ...]] = ("command", "cwd", "timeout_s")

    def check_edit(self, original: _Payload) -> None:
        if not self.command.strip():
            raise ApprovalEditError("the edited command is empty; reject the call instead")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ApprovalEditError("the edited timeout must be a positive number of seconds")


class StepPayload(_Payload):
    """Step mode: a worker finished a round; continue to the next?"""
    kind: Literal["step"] = "step"
    round: int
    last: str = ""                  # the worker's last words


class BudgetPayload(_Payload):
    """The budget is reached; raising it (editable) lets the work go on."""
    kind: Literal["budget"] = "budget"
    spent_usd: float = 0.0
    budget_usd: float = 0.0
    spent_tokens: int = 0
    budget_tokens: int = 0
    EDITABLE: ClassVar[tuple[str, ...]] = ("budget_usd", "budget_tokens")


class CheckpointPayload(_Payload):
    """A phase's manual verification: the person checks the phase's work."""
    kind: Literal["checkpoint"] = "checkpoint"
    phase: str
    tasks: list[str] = Field(default_factory=list)
    commits: list[str] = Field(default_factory=list)
    verify_output: str = ""


class MergePayload(_Payload):
    """A finished track's branch is about to be merged into the person's branch."""
    kind: Literal["merge"] = "merge"
    branch: str
    into: str
    diff: str = ""
    tickets: list[dict[str, Any]] = Field(default_factory=list)


class RepairPayload(_Payload):
    """A failed check: Tier 4's diagnosis (editable) goes to a fresh worker session."""
    kind: Literal["repair"] = "repair"
    attempt: int
    check: str = ""
    output: str = ""
    diagnosis: str = ""
    EDITABLE: ClassVar[tuple[str, ...]] = ("diagnosis",)


ApprovalPayload = Annotated[
    SpawnPayload | ToolPayload | ShellPayload | StepPayload | BudgetPayload | CheckpointPayload
    | MergePayload | RepairPayload,
    Field(discriminator="kind")]

PAYLOAD_CLASSES: dict[str, type[_Payload]] = {
    "spawn": SpawnPayload, "tool": ToolPayload, "shell": ShellPayload, "step": StepPayload,
    "budget": BudgetPayload, "checkpoint": CheckpointPayload, "merge": MergePayload,
    "repair": RepairPayload,
}

_PY_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                          "dict": (dict,), "list": (list,), "bool": (bool,)}


def _edit_type_error(name: str, annotation: Any, value: Any) -> str | None:
    """The sentence for a value of the wrong JSON type, or None when it fits."""
    text = getattr(annotation, "__name__", None) or str(annotation)
    names = [n for n in ("str", "int", "float", "dict", "list", "bool") if n in text]
    if not names or value is None and "None" in text:
        return None
    allowed = tuple(t for n in names for t in _PY_TYPES[n])
    if isinstance(value, bool) and bool not in allowed:
        allowed_ok = False
    else:
        allowed_ok = isinstance(value, allowed)
    if allowed_ok:
        return None
    return (f"{name!r} in the edited payload must be {' or '.join(names)}, "
            f"not {type(value).__name__}")


def edit_payload(original: _Payload, edit: Mapping[str, Any] | _Payload | None) -> _Payload:
    """The payload a person approved: `edit` (a partial dict, or a whole payload of the same
    kind) merged over `original`. Raises ApprovalEditError with a sentence for a bad edit."""
    if edit is None:
        return original
    if isinstance(edit, _Payload):
        if type(edit) is not type(original):
            raise ApprovalEditError(f"a {original.kind} approval cannot be answered with a "
                                    f"{getattr(edit, 'kind', '?')} payload")
        edit = edit.model_dump()
    if not isinstance(edit, Mapping):
        raise ApprovalEditError("an edited payload must be an object")
    cls = type(original)
    fields = cls.model_fields
    merged = original.model_dump()
    for key, value in edit.items():
        if key == "kind":
            if value != original.kind:
                raise ApprovalEditError(f"an approval cannot change its kind "
                                        f"({original.kind} → {value})")
            continue
        if key not in fields:
            raise ApprovalEditError(f"{key!r} is not part of a {original.kind} approval "
                                    f"(it has: {', '.join(k for k in fields if k != 'kind')})")
        problem = _edit_type_error(key, fields[key].annotation, value)
        if problem:
            raise ApprovalEditError(problem)
        if value != merged.get(key) and key not in cls.EDITABLE and key != "tool":
            raise ApprovalEditError(f"{key!r} of a {original.kind} approval is shown, not "
                                    f"edited" + (f" (editable: {', '.join(cls.EDITABLE)})"
                                                 if cls.EDITABLE else ""))
        merged[key] = value
    try:
        new = cls.model_validate(merged)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ApprovalEditError(f"{where!r} in the edited payload: {first.get('msg')}") from None
    new.check_edit(original)
    return new


class ApprovalRequest(BaseModel):
    id: str = Field(default_factory=lambda: "A-" + uuid.uuid4().hex[:10])
    title: str
    stream_id: str = ""
    track_id: str = ""
    ticket_id: str = ""
    payload: ApprovalPayload
    created_at: float = Field(default_factory=time.time)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> str:
        """The payload's kind ("spawn", "tool", …): one source of truth."""
        return self.payload.kind


class Approved(BaseModel):
    """Yes: run it. A person's edit arrives as a whole typed `payload` (the GUI edits typed
    objects) or as partial `edits` (a dict of changed fields, as the API and the CLI send); the
    engine merges and checks either (`edit_payload`), and the decision it hands on carries the
    final typed payload in `payload` (None: as requested)."""
    kind: Literal["approved"] = "approved"
    payload: ApprovalPayload | None = None
    edits: dict[str, Any] | None = None
    reason: str = ""
    source: str = "user"

    @property
    def approved(self) -> bool:
        return True


class Denied(BaseModel):
    """No, with the person's reason (it reaches the model as the call's result)."""
    kind: Literal["denied"] = "denied"
    reason: str = ""
    source: str = "user"

    @property
    def approved(self) -> bool:
        return False

    @property
    def payload(self) -> None:
        return None


ApprovalDecision = Annotated[Approved | Denied, Field(discriminator="kind")]


def decide(approved: bool, *, payload: _Payload | None = None, reason: str = "",
           source: str = "user") -> Approved | Denied:
    """An Approved or a Denied from the yes/no a dialog, the CLI or the API gives."""
    if approved:
        return Approved(payload=payload, reason=reason, source=source)
    return Denied(reason=reason, source=source)
