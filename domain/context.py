"""Context sections: the labelled parts of a tier's request, with their token counts.

Part of the models layer (door: models.py); imports nothing of ours but its siblings.
Pure data and functions: any thread, no state of its own.
"""
from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, computed_field

# ---------------------------------------------------------------------------------------------
# Context sections (what each tier's request is made of; prompts.tier*_sections builds them)
# ---------------------------------------------------------------------------------------------

ContextKind = Literal["system", "document", "map", "epic", "track", "ticket", "file", "skeleton",
                      "failure", "note"]


def estimate_tokens(text: str) -> int:
    """One token per four characters, rounded up: the offline provider's rule, used to show a
    section's size before any provider has counted it."""
    return -(-len(text) // 4)


class SectionInfo(NamedTuple):
    """What is kept of a section once it was sent (its text is in the comms log's request):
    enough for the Usage panel's context view, small enough to keep for every agent."""
    label: str
    kind: str
    tokens: int
    shared: bool
    path: str | None


class ContextSection(BaseModel):
    """One labelled part of an agent's context: the system prompt, a project document, the
    repository map, a file (in full or as a skeleton), the ticket. `shared` marks the parts that
    many requests have in common; they come first so providers' prompt caches can reuse them.
    `tokens` is derived from the text, so an edited section never shows a stale count."""
    model_config = ConfigDict(frozen=True)

    label: str = Field(min_length=1, max_length=300)
    kind: ContextKind
    text: str
    path: str | None = None
    shared: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text)

    def info(self) -> SectionInfo:
        return SectionInfo(self.label, self.kind, self.tokens, self.shared, self.path)

    def with_text(self, text: str) -> "ContextSection":
        """The same section with the person's edited text."""
        return self.model_copy(update={"text": text})
