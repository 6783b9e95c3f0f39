"""The store layer behind the `conductor_store.py` door: `conductor/` on disk, in the Gemini CLI
Conductor extension's format, read in every form real projects use and edited in place.

No module here keeps mutable module-level state; ConductorStore (facade) owns a lock and a
small save cache per instance and is called from the engine's I/O thread, the CLI or tests.

Modules (each says which thread it runs on and what state it owns):
    errors     StoreError, TrackExistsError, LoadProblem
    fsio       atomic writes, reads that keep a file's BOM and line endings, copies aside
    names      track ids, short names, small text helpers
    plan       plan.md: parse with positions, edit in place, a new plan in the extension's form
    spec       spec.md: parse, edit a section in place, a new spec
    registry   tracks.md: every registry form, the marker edited in place, a new entry appended
    metadata   metadata.json: read, status/updated_at edited in place, a new file
    state      state.toml: Clutch's own per-track state (what the format has no place for)
    tickets    plan tasks <-> tickets: ids, default dependencies (plan order)
    loader     one track folder -> a Track
    settings   .clutch/config.toml
    notes      the texts of a new project's notes and a new track's index.md
    facade     ConductorStore, the one object other layers use
"""
