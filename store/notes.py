"""Texts of the files Clutch writes only in a new project or a track it creates itself: the
project notes (product.md, tech-stack.md, workflow.md, index.md) and a track's index.md, as the
Conductor extension's setup and newTrack write them. Constants only: no state, usable from any thread.
"""
from __future__ import annotations

from types import MappingProxyType

NOTES_FILES = MappingProxyType({
    "product.md": "# Product Definition\n\n"
                  "_Describe the product here: who it is for, what it does, and its goals._\n",
    "tech-stack.md": "# Tech Stack\n\n"
                     "_List the languages, frameworks, tools and services this project uses._\n",
    "workflow.md": "# Project Workflow\n\n"
                   "## Task Workflow\n\n"
                   "1. Tasks are taken from a track's `plan.md`, in order, respecting dependencies.\n"
                   "2. A task in progress is marked `[~]`; a finished one `[x]`, with the short "
                   "SHA of its commit appended.\n"
                   "3. A track's status is kept in `tracks.md`: `[ ]` new, `[~]` in progress, "
                   "`[x]` done.\n",
    "index.md": "# Project Context\n\n"
                "## Definition\n\n"
                "- [Product Definition](./product.md)\n"
                "- [Tech Stack](./tech-stack.md)\n\n"
                "## Workflow\n\n"
                "- [Workflow](./workflow.md)\n\n"
                "## Management\n\n"
                "- [Tracks Registry](./tracks.md)\n"
                "- [Tracks Directory](./tracks/)\n",
})


def track_index_text(track_id: str) -> str:
    return (f"# Track {track_id} Context\n\n"
            "- [Specification](./spec.md)\n"
            "- [Implementation Plan](./plan.md)\n"
            "- [Metadata](./metadata.json)\n")
