"""The six worker tools as offered to a model, their results, and argument validation.

Pure data and pure functions: safe on any thread, no state beyond the immutable
``TOOL_SPECS`` tuple.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolbox.errors import ToolError


@dataclass(frozen=True)
class ToolSpec:
    """One tool as offered to a model. ``parameters`` is a JSON schema; treat it as read-only."""
    name: str
    description: str
    parameters: dict = field(hash=False)
    kind: str  # "read" | "write" | "shell"

    @property
    def mutating(self) -> bool:
        return self.kind != "read"


def _schema(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required}


_PATH_DOC = "Path relative to the workspace root, with '/' between components (no '..', no absolute paths)."

TOOL_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="read_file",
        description=("Read a text file of the workspace. Returns the lines [offset, offset+limit) "
                     "exactly as they are in the file, with a note at the end when more lines follow."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC},
            "offset": {"type": "integer", "description": "First line to return, counted from 0 (default 0)."},
            "limit": {"type": "integer", "description": "Most lines to return (default 2000)."},
        }, ["path"]),
        kind="read",
    ),
    ToolSpec(
        name="list_dir",
        description=("List a directory of the workspace: one entry per line, sorted, directories "
                     "with a trailing '/', symlinks as 'name -> target'."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC + " Default '.', the workspace root."},
        }, []),
        kind="read",
    ),
    ToolSpec(
        name="search_files",
        description=("Search files for a regular expression (RE2 syntax: no lookarounds or backreferences). "
                     "Returns 'file:line: text' lines "
                     "(at most 200). Binary files, symlinks and .git directories are not searched."),
        parameters=_schema({
            "pattern": {"type": "string", "description": "RE2 regular expression matched against each line."},
            "path": {"type": "string", "description": "File or directory to search. " + _PATH_DOC + " Default '.'."},
            "glob": {"type": "string", "description": ("Only files whose name matches this glob, e.g. '*.py' "
                                                       "(matched against the path from the workspace root if it "
                                                       "contains '/'). Default '*'.")},
        }, ["pattern"]),
        kind="read",
    ),
    ToolSpec(
        name="write_file",
        description=("Create or overwrite a file with the given content (parent directories are "
                     "created). Files inside .git cannot be written; .clutch is off limits."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC},
            "content": {"type": "string", "description": "The complete new content of the file."},
        }, ["path", "content"]),
        kind="write",
    ),
    ToolSpec(
        name="edit_file",
        description=("Replace one exact occurrence of 'old' with 'new' in a file. 'old' must match "
                     "the file exactly once (whitespace included); add surrounding lines if it is ambiguous."),
        parameters=_schema({
            "path": {"type": "string", "description": _PATH_DOC},
            "old": {"type": "string", "description": "The exact text to replace; must occur exactly once."},
            "new": {"type": "string", "description": "The replacement text."},
        }, ["path", "old", "new"]),
        kind="write",
    ),
    ToolSpec(
        name="run_shell",
        description=("Run a bash command in the workspace. stdout and stderr are combined and clamped; "
                     "the result carries the exit code. The command is killed when it times out."),
        parameters=_schema({
            "command": {"type": "string", "description": "The bash script to run (bash -c)."},
            "cwd": {"type": "string", "description": "Directory to run in. " + _PATH_DOC + " Default '.'."},
            "timeout": {"type": "number", "description": (
                "Seconds before the command is killed (default and maximum: the workspace's "
                "setting; a longer value is cut to it).")},
        }, ["command"]),
        kind="shell",
    ),
)


def tool_spec(name: str) -> ToolSpec:
    for spec in TOOL_SPECS:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in TOOL_SPECS)
    raise KeyError(f"unknown tool {name!r}; the tools are: {known}")


@dataclass
class ToolResult:
    ok: bool
    output: str = ""
    error: str = ""
    exit_code: int | None = None  # run_shell only
    timeout_s: float | None = None  # run_shell only: the time limit the command ran under

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"ok": self.ok, "output": self.output, "error": self.error}
        if self.exit_code is not None:
            d["exit_code"] = self.exit_code
        if self.timeout_s is not None:
            d["timeout_s"] = self.timeout_s
        return d


def validate_args(spec: ToolSpec, args: object) -> dict:
    """The arguments of a call to ``spec``, type-checked; ToolError names what is wrong."""
    if not isinstance(args, dict):
        raise ToolError(f"{spec.name}: the arguments must be a JSON object, got {type(args).__name__}")
    props: dict = spec.parameters["properties"]
    unknown = sorted(str(k) for k in args if k not in props)
    if unknown:
        raise ToolError(f"{spec.name}: unexpected argument(s) {', '.join(map(repr, unknown))}; "
                        f"{spec.name} takes: {', '.join(props)}")
    clean: dict[str, Any] = {}
    for key, prop in props.items():
        value = args.get(key)
        if value is None:
            if key in spec.parameters["required"]:
                raise ToolError(f"{spec.name}: missing required argument {key!r}")
            continue
        typ = prop["type"]
        if typ == "string":
            if not isinstance(value, str):
                raise ToolError(f"{spec.name}: argument {key!r} must be a string, got "
                                f"{type(value).__name__} ({value!r:.60})")
        elif typ == "integer":
            # Providers may send JSON numbers as floats (Gemini does): accept 5.0 as 5.
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ToolError(f"{spec.name}: argument {key!r} must be an integer, got "
                                f"{type(value).__name__} ({value!r:.60})")
        elif typ == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ToolError(f"{spec.name}: argument {key!r} must be a number, got "
                                f"{type(value).__name__} ({value!r:.60})")
        else:  # pragma: no cover - a spec bug, not a user error
            raise AssertionError(f"unsupported schema type {typ!r} in {spec.name}")
        clean[key] = value
    return clean

