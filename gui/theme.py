"""Look and words shared by every part of the GUI: colours, icons, sizes, the shortcut list,
and the small formatters (tokens, cost, an error as a sentence).

Thread: any (pure functions and constants). State: none.
"""
from __future__ import annotations

from imgui_bundle import ImVec2, ImVec4, hello_imgui, imgui
from imgui_bundle import icons_fontawesome_4 as fa
from pydantic import ValidationError


APP_TITLE = "Clutch"


DEJAVU_SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


DEJAVU_MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"


WRAP_COLS = 160            # stream rows are hard-wrapped at this many characters on arrival


STREAM_KEEP_CHARS = 4096   # a stream ended and off screen keeps its rows up to this size


MAX_EVENTS_PER_FRAME = 20_000


MAX_NOTICES = 300


MARKDOWN_LIMIT = 100_000   # characters: above this a stream is not offered as markdown


WINDOWS = ("Epic", "Tracks", "Tickets", "Streams", "Approvals", "Usage", "Comms")


WRAP = getattr(imgui.InputTextFlags_, "word_wrap", 0)


GREY = ImVec4(0.62, 0.64, 0.68, 1.0)


BLUE = ImVec4(0.35, 0.65, 1.0, 1.0)


GREEN = ImVec4(0.35, 0.85, 0.45, 1.0)


RED = ImVec4(1.0, 0.38, 0.35, 1.0)


AMBER = ImVec4(1.0, 0.72, 0.25, 1.0)


PURPLE = ImVec4(0.72, 0.55, 0.95, 1.0)


DIM = ImVec4(0.45, 0.46, 0.5, 1.0)


WHITE = ImVec4(0.92, 0.93, 0.95, 1.0)


STATUS_COLOURS: dict[str, ImVec4] = {
    # tickets
    "todo": GREY, "in_progress": BLUE, "completed": GREEN, "failed": RED, "blocked": AMBER,
    "skipped": PURPLE, "cancelled": DIM,
    # tracks
    "new": GREY, "planned": WHITE, "paused": AMBER, "needs_attention": AMBER,
    # streams
    "idle": GREY, "streaming": BLUE, "done": GREEN,
}


STATUS_ICONS: dict[str, str] = {
    "todo": fa.ICON_FA_DOT_CIRCLE, "in_progress": fa.ICON_FA_SPINNER, "completed": fa.ICON_FA_CHECK,
    "failed": fa.ICON_FA_TIMES, "blocked": fa.ICON_FA_BAN, "skipped": fa.ICON_FA_FORWARD,
    "cancelled": fa.ICON_FA_STOP, "new": fa.ICON_FA_STAR, "planned": fa.ICON_FA_LIST,
    "paused": fa.ICON_FA_PAUSE, "streaming": fa.ICON_FA_SPINNER, "done": fa.ICON_FA_CHECK,
    "idle": fa.ICON_FA_DOT_CIRCLE, "needs_attention": fa.ICON_FA_EXCLAMATION,
}


TIER_COLOURS = {"Tier 1": ImVec4(0.95, 0.75, 0.3, 1), "Tier 2": ImVec4(0.45, 0.8, 1.0, 1),
                "Tier 3": ImVec4(0.5, 0.9, 0.55, 1), "Tier 4": ImVec4(0.9, 0.55, 0.9, 1)}


LEVEL_COLOURS = {"green": GREEN, "amber": AMBER, "red": RED}


NOTICE_COLOURS = {"error": RED, "warning": AMBER, "info": BLUE}


NOTICE_ICONS = {"error": fa.ICON_FA_TIMES_CIRCLE, "warning": fa.ICON_FA_EXCLAMATION_TRIANGLE,
                "info": fa.ICON_FA_INFO_CIRCLE}


SHORTCUTS: list[tuple[str, str]] = [
    ("Ctrl+Enter", "Epic: plan the epic (Tier 1). Approval dialog: approve (with your edits)"),
    ("Escape", "Approval dialog: jump to the reject reason (Enter there rejects)"),
    ("Ctrl+Shift+Enter", "Approval dialog: approve all pending requests, once"),
    ("Ctrl+Shift+R", "Open the next pending approval"),
    ("Ctrl+,", "Settings"),
    ("Ctrl+O", "Open a workspace (refused while work is under way here)"),
    ("Ctrl+1 … Ctrl+7", "Focus Epic, Tracks, Tickets, Streams, Approvals, Usage, Comms"),
    ("F1", "This list of shortcuts"),
    ("Ctrl+Q", "Quit (the engine saves its state)"),
]


def em(x: float, y: float = 0.0) -> ImVec2:
    return hello_imgui.em_to_vec2(x, y)


def fmt_tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def fmt_cost(usd: float) -> str:
    if usd == 0:
        return "$0"
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def describe_error(e: BaseException) -> str:
    """A sentence for the user: the message, with the type only when the message is bare."""
    problems = getattr(e, "problems", None)
    if problems:
        return "; ".join(str(p) for p in problems)
    msg = str(e).strip()
    name = type(e).__name__
    if not msg:
        return name
    if name in ("EngineError", "DagError", "PlanError", "ProviderError", "MissingApiKey",
                "BudgetExceeded", "ApprovalNotFound", "ApprovalAlreadyResolved", "StoreError"):
        return msg
    return f"{name}: {msg}"


def validation_messages(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(settings)"
        out.append(f"{loc}: {err.get('msg', '')}")
    return out

