"""The `clutch` command: the desktop app by default, and headless subcommands.

    clutch [--workspace DIR] [--api]            the app (gui_2.main)
    clutch run --epic TEXT --workspace DIR      the whole hierarchy, headless, JSON summary on stdout
    clutch tracks --workspace DIR [--json]      list tracks and tickets
    clutch serve --workspace DIR                the engine and the loopback API, no window

Sits above every layer: it only parses arguments and hands over. The engine modules are
imported inside each command so that `clutch --help` is instant and the app's first frame
waits for nothing it does not need.

Process-level guards, taken here because they belong to the process, not to a layer:
- the process is made non-dumpable at start (`prctl(PR_SET_DUMPABLE, 0)`), so other processes
  of the same user cannot read its /proc/<pid>/environ (where an API key from the environment
  lives) nor attach to it; where that is not available it says so on stderr;
- one Clutch per workspace: the app, `clutch run` and `clutch serve` hold the workspace's
  lock (store.lock) for their whole life; a second one stops at once naming the holder
  (exit code 3). `clutch tracks` only reads and takes no lock.

Runs on the main thread; the console thread of `clutch run` drains the engine's inbox.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("clutch")


_PROVIDERS = ["offline", "gemini", "openai", "ollama", "anthropic"]
_TIER_PROVIDER_HELP = ('one tier on its own provider (and model), repeatable: '
                       '"Tier 3=ollama:qwen2.5-coder:7b" or "Tier 1=anthropic"')


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clutch", description="Run a hierarchy of LLM coding agents "
                                "with a human in control.")
    p.add_argument("--workspace", "-w", default=".", help="the repository to work in (default: .)")
    p.add_argument("--api", action="store_true", help="start the loopback automation API too")
    p.add_argument("--provider", choices=_PROVIDERS, help="override the provider")
    p.add_argument("--tier-provider", action="append", default=[], metavar="TIER=PROVIDER[:MODEL]",
                   help=_TIER_PROVIDER_HELP)
    sub = p.add_subparsers(dest="command")

    r = sub.add_parser("run", help="plan and run an epic headless, JSON summary on stdout")
    r.add_argument("--workspace", "-w", default=".", help="the repository to work in")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--epic", help="the epic: a paragraph of intent")
    src.add_argument("--epic-file", help="read the epic from this file")
    r.add_argument("--track", action="append", default=[],
                   help="run this existing track (repeatable) instead of planning an epic")
    r.add_argument("--resume", action="store_true",
                   help="continue the tracks an interrupted run left unfinished")
    r.add_argument("--yes", "-y", action="store_true",
                   help="approve every spawn, tool call and shell command without asking")
    r.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    r.add_argument("--max-workers", type=int, default=None, help="parallel workers (default 4)")
    r.add_argument("--provider", choices=_PROVIDERS, help="override the provider")
    r.add_argument("--tier-provider", action="append", default=[], metavar="TIER=PROVIDER[:MODEL]",
                   help=_TIER_PROVIDER_HELP)
    r.add_argument("--pace", type=float, default=None,
                   help="offline model: seconds between streamed chunks")
    r.add_argument("--step", action="store_true", help="ask before every worker step")
    r.add_argument("--no-merge", action="store_true",
                   help="leave each finished track on its branch clutch/<track> (for a pull "
                        "request) instead of merging it into your branch")
    r.add_argument("--verify", metavar="CMD", default=None,
                   help="a command each ticket's work must pass (in its own tree and sandbox) "
                        "before it completes, e.g. \"python3 -m pytest -q\"")
    r.add_argument("--max-repairs", type=int, default=None, metavar="N",
                   help="repair attempts after a failed check (default 2)")
    r.add_argument("-v", "--verbose", action="store_true", help="stream agents' text to stderr")

    t = sub.add_parser("tracks", help="list the workspace's tracks and tickets")
    t.add_argument("--workspace", "-w", default=".")
    t.add_argument("--json", action="store_true")

    s = sub.add_parser("serve", help="the engine and the loopback API, without a window")
    s.add_argument("--workspace", "-w", default=".")
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--provider", choices=_PROVIDERS, help="override the provider")
    s.add_argument("--tier-provider", action="append", default=[], metavar="TIER=PROVIDER[:MODEL]",
                   help=_TIER_PROVIDER_HELP)
    s.add_argument("--yes", "-y", action="store_true", help="approve everything automatically")
    return p


EXIT_BUSY = 3           # another Clutch holds the workspace
PR_SET_DUMPABLE = 4     # <linux/prctl.h>


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    notice = make_undumpable()
    if notice:
        log.warning("%s", notice)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "tracks":
        return cmd_tracks(args)
    if args.command == "serve":
        return cmd_serve(args)
    return cmd_gui(args)


def make_undumpable() -> str | None:
    """Make this process non-dumpable: other processes of the same user can no longer read
    its /proc/<pid>/environ or memory, nor ptrace it (root still can). Returns None when done,
    else a notice saying why not."""
    if not sys.platform.startswith("linux"):
        return (f"note: on {sys.platform} Clutch cannot make itself non-dumpable; other "
                f"processes of your user may be able to read its environment (API keys)")
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError) as e:
        return (f"note: prctl is not available ({e}); other processes of your user may be "
                f"able to read Clutch's environment (API keys)")
    if rc != 0:
        err = ctypes.get_errno()
        return (f"note: prctl(PR_SET_DUMPABLE, 0) failed ({os.strerror(err)}); other "
                f"processes of your user may be able to read Clutch's environment (API keys)")
    return None


def _lock_workspace(ws: Path, command: str) -> Any:
    """The workspace's lock, held by the caller for as long as it runs; WorkspaceBusy or
    StoreError (both with a message for the user) when it cannot be taken."""
    from conductor_store import WorkspaceLock
    return WorkspaceLock(ws).acquire(command)


def _take_lock(ws: Path, command: str) -> tuple[Any, int]:
    """(the workspace's lock, 0), or (None, the exit code) once the reason is said: 3 when
    another Clutch holds it, 2 when it cannot be taken at all."""
    from conductor_store import StoreError, WorkspaceBusy
    try:
        return _lock_workspace(ws, command), 0
    except WorkspaceBusy as e:
        return None, _fail(str(e), EXIT_BUSY)
    except StoreError as e:
        return None, _fail(str(e))


def cmd_gui(args: argparse.Namespace) -> int:
    ws = Path(args.workspace).expanduser()
    lock = None
    if ws.is_dir():          # else the app itself says what is wrong with the workspace
        lock, code = _take_lock(ws.resolve(), "clutch" + (" --api" if args.api else ""))
        if lock is None:
            return code
    settings = None
    if args.tier_provider and ws.is_dir():      # the command line's over the saved settings
        try:
            settings, notices = _settings(ws.resolve(), args)
        except ValueError as e:
            if lock is not None:
                lock.release()
            return _fail(str(e))
        for n in notices:
            log.warning(n)
    import gui_2
    try:
        starter = None
        if args.api:
            import hook_server
            starter = hook_server.start_for_engine
        return gui_2.main(workspace=args.workspace, api=starter, provider=args.provider, lock=lock,
                          locker=lambda p: _lock_workspace(p, "clutch"), settings=settings)
    finally:
        if lock is not None:
            lock.release()


def _fail(msg: str, code: int = 2) -> int:
    print(f"clutch: {msg}", file=sys.stderr)
    return code


def _settings(workspace: Path, args: argparse.Namespace) -> tuple[Any, list[str]]:
    from conductor_store import ConductorStore
    store = ConductorStore(workspace)
    settings, notices = store.load_settings()
    upd: dict[str, Any] = {}
    if getattr(args, "provider", None):       # every tier: a tier's own choice is dropped
        upd.update(provider=args.provider, tier_providers={}, tier_models={})
    if getattr(args, "tier_provider", None):
        from ai_client import parse_tier_provider
        tiers = dict(upd.get("tier_providers", settings.tier_providers))
        models = dict(upd.get("tier_models", settings.tier_models))
        for spec in args.tier_provider:
            tier, name, model = parse_tier_provider(spec)
            tiers[tier] = name
            models.pop(tier, None)
            if model:
                models[tier] = model
        upd.update(tier_providers=tiers, tier_models=models)
    if getattr(args, "max_workers", None) is not None:
        if args.max_workers < 1:
            raise ValueError("--max-workers must be at least 1")
        upd["max_workers"] = args.max_workers
    if getattr(args, "pace", None) is not None:
        if args.pace < 0:
            raise ValueError("--pace must not be negative")
        upd["offline_pace_s"] = args.pace
    if getattr(args, "step", False):
        upd["step_mode"] = True
    if getattr(args, "no_merge", False):
        upd["merge_tracks"] = False
    if getattr(args, "verify", None) is not None:
        if not args.verify.strip():
            raise ValueError("--verify needs a command, e.g. --verify \"python3 -m pytest -q\"")
        upd["verify_command"] = args.verify.strip()
    if getattr(args, "max_repairs", None) is not None:
        if not 0 <= args.max_repairs <= 10:
            raise ValueError("--max-repairs must be from 0 to 10")
        upd["max_repairs"] = args.max_repairs
    return (settings.model_copy(update=upd) if upd else settings), notices


def _workspace(path: str, create: bool = False) -> Path:
    ws = Path(path).expanduser()
    try:
        if create:
            ws.mkdir(parents=True, exist_ok=True)
        if not ws.is_dir():
            raise ValueError(f"workspace {ws} is not a directory")
        return ws.resolve()
    except OSError as e:
        raise ValueError(f"cannot use the workspace {ws}: {e.strerror or e}") from e


def cmd_run(args: argparse.Namespace) -> int:
    try:
        ws = _workspace(args.workspace, create=True)
        settings, notices = _settings(ws, args)
    except ValueError as e:
        return _fail(str(e))
    epic = args.epic
    if args.epic_file:
        try:
            epic = Path(args.epic_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            return _fail(f"cannot read the epic file: {e}")
    if not (epic or args.track or args.resume):
        return _fail("nothing to do: give --epic TEXT, --epic-file FILE, --track ID or --resume")
    if not args.yes and not sys.stdin.isatty():
        return _fail("approvals are needed but there is no terminal to ask on; run in a "
                     "terminal, or pass --yes to approve every spawn and tool call")
    lock, code = _take_lock(ws, "clutch run")
    if lock is None:
        return code
    with lock:
        return _run_locked(args, ws, settings, notices, epic)


def _run_locked(args: argparse.Namespace, ws: Path, settings: Any, notices: list[str],
                epic: str | None) -> int:
    from ai_client import MissingApiKey
    from multi_agent_conductor import ConductorEngine, EngineError
    from models import DagError

    for n in notices:
        log.warning(n)
    try:
        engine = ConductorEngine(ws, settings, auto_approve=args.yes, resume=args.resume)
    except EngineError as e:
        return _fail(str(e))
    for n in engine.notices:
        log.warning(n)
    if not engine.settings.verify_command:
        from multi_agent_conductor import propose_verify_command
        cmd, where = propose_verify_command(ws)
        if cmd:
            log.warning(f"no verify command is set; {where} suggests one: --verify {cmd!r}")
    stop = threading.Event()
    console = threading.Thread(target=_console, args=(engine, stop, args.verbose),
                               name="clutch-console", daemon=True)
    rc = 0
    track_ids: list[str] = []
    with engine:
        console.start()
        try:
            track_ids = _tracks_to_run(engine, args, epic)
            futures = {}
            for tid in track_ids:
                if not engine.track(tid).tickets:
                    engine.plan_track(tid).result()
                futures[tid] = engine.start_track(tid)
            for f in futures.values():
                f.result()
        except MissingApiKey as e:
            rc = _fail(str(e))
        except (EngineError, DagError, ValueError) as e:
            rc = _fail(str(e), 1)
        except KeyboardInterrupt:
            rc = _fail("interrupted: the state is saved; continue with --resume", 130)
        except Exception as e:   # a plan that failed: the message is already on its stream
            rc = _fail(f"{type(e).__name__}: {e}" if not str(e).startswith("Tier") else str(e), 1)
        finally:
            stop.set()
            console.join(timeout=5)
        summary = engine.summary()
    if rc == 0 and any(t["status"] != "completed" for t in summary["tracks"]
                       if t["id"] in track_ids):
        rc = 1
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        for t in summary["tracks"]:
            done = sum(1 for k in t["tickets"] if k["status"] == "completed")
            print(f"{t['id']}  {t['status']:<12} {done}/{len(t['tickets'])}  {t['title']}")
        for tier, u in summary["usage"].items():
            print(f"{tier}: {u['total_tokens']} tokens in {u['requests']} requests, "
                  f"${u['cost_usd']:.4f}")
        print(f"session: {summary['session_dir']}")
    return rc


def _tracks_to_run(engine: Any, args: argparse.Namespace, epic: str | None) -> list[str]:
    if args.track:
        known = {t.id for t in engine.tracks()}
        missing = [t for t in args.track if t not in known]
        if missing:
            raise ValueError(f"no such track: {', '.join(missing)} (see `clutch tracks`)")
        return list(args.track)
    if args.resume:
        ids = [t.id for t in engine.tracks() if t.status not in ("completed", "cancelled")]
        # the epic is planned only when the interrupted run had not planned it yet
        if ids or not epic or engine.planned_before(epic):
            if not ids:
                log.info("nothing to resume: every track is completed")
            return ids
    plan = engine.plan_epic(epic).result()
    tracks = engine.accept_tracks(plan.tracks).result()
    return [t.id for t in tracks]


def _console(engine: Any, stop: threading.Event, verbose: bool) -> None:
    """Drain the engine's inbox: log progress to stderr, answer approvals on the terminal."""
    from events import (ApprovalRequested, ErrorEvent, LogEvent, StatusChange, StreamChunk,
                        StreamEnd)
    from multi_agent_conductor import ApprovalAlreadyResolved, ApprovalNotFound

    while not stop.is_set() or len(engine.inbox):
        for evt in engine.inbox.drain():
            if isinstance(evt, StreamChunk):
                if verbose:
                    sys.stderr.write(evt.text)
            elif isinstance(evt, StreamEnd):
                log.info("%s: %s", evt.stream_id, evt.state)
            elif isinstance(evt, StatusChange):
                what = evt.ticket_id or f"track {evt.track_id}"
                log.info("%s -> %s%s", what, evt.status, f" ({evt.reason})" if evt.reason else "")
            elif isinstance(evt, ErrorEvent):
                log.error("%s", evt.message)
            elif isinstance(evt, LogEvent):
                log.log(logging.WARNING if evt.level == "warning" else logging.INFO, "%s",
                        evt.message)
            elif isinstance(evt, ApprovalRequested):
                decision = _ask_terminal(evt.request)
                try:
                    engine.resolve(evt.request.id, decision)
                except (ApprovalNotFound, ApprovalAlreadyResolved) as e:
                    log.warning("%s", e)
        stop.wait(0.05)


def _ask_terminal(req: Any) -> Any:
    from models import Approved, Denied
    out = sys.stderr
    out.write(f"\n=== approval: {req.title} [{req.kind}] ===\n")
    for k, v in req.payload.model_dump(exclude={"kind"}).items():
        text = v if isinstance(v, str) else json.dumps(v, indent=2, ensure_ascii=False)
        out.write(f"--- {k} ---\n{text}\n")
    while True:
        out.write("[a]pprove, [e]dit then approve, [r]eject? ")
        out.flush()
        answer = sys.stdin.readline()
        if not answer:      # EOF: the terminal went away; never hang
            return Denied(reason="no answer (end of input)", source="terminal")
        a = answer.strip().lower()[:1]
        if a == "a":
            return Approved(source="terminal")
        if a == "r":
            out.write("reason (optional): ")
            out.flush()
            return Denied(reason=sys.stdin.readline().strip(), source="terminal")
        if a == "e":
            edited = _edit_payload(req.payload)
            if edited is not None:
                return Approved(payload=edited, source="terminal")


def _edit_payload(payload: Any) -> Any:
    """Edit the payload's editable fields as JSON in $EDITOR, or inline (one JSON document,
    ended by a blank line). Returns the edited typed payload, or None (ask again) when the edit
    is not valid JSON or not a valid edit, saying why."""
    from models import ApprovalEditError, edit_payload
    editable = type(payload).EDITABLE
    if not editable:
        sys.stderr.write(f"a {payload.kind} approval has nothing to edit; approve or reject\n")
        return None
    text = json.dumps(payload.model_dump(include=set(editable)), indent=2, ensure_ascii=False)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor:
        with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False,
                                         encoding="utf-8") as f:
            f.write(text)
            path = f.name
        try:
            subprocess.run([*shlex.split(editor), path], check=True)
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, subprocess.CalledProcessError) as e:
            sys.stderr.write(f"the editor failed ({e}); edit inline instead\n")
            editor = None
        finally:
            Path(path).unlink(missing_ok=True)
    if not editor:
        sys.stderr.write("Enter the edited JSON; end with an empty line:\n")
        lines = []
        while True:
            ln = sys.stdin.readline()
            if not ln or not ln.strip():
                break
            lines.append(ln)
        text = "".join(lines)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        sys.stderr.write(f"not valid JSON ({e}); nothing was approved, try again\n")
        return None
    if not isinstance(obj, dict):
        sys.stderr.write("the edit must be a JSON object; try again\n")
        return None
    try:
        return edit_payload(payload, obj)
    except ApprovalEditError as e:
        sys.stderr.write(f"{e}; nothing was approved, try again\n")
        return None


def cmd_tracks(args: argparse.Namespace) -> int:
    from conductor_store import ConductorStore
    try:
        ws = _workspace(args.workspace)
    except ValueError as e:
        return _fail(str(e))
    tracks, problems = ConductorStore(ws).load_tracks()
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if args.json:
        # status: the registry's marker (tracks.md) is a track's live status
        print(json.dumps({"tracks": [{"id": t.id, "title": t.title, "status": t.status,
                                      "tickets": [{"id": k.id, "status": k.status,
                                                   "description": k.description,
                                                   "depends_on": k.depends_on,
                                                   "phase": k.phase, "commit_sha": k.commit_sha,
                                                   "checkpoint": k.checkpoint}
                                                  for k in t.tickets],
                                      "problems": t.problems} for t in tracks],
                          "problems": [str(p) for p in problems]},
                         indent=2, ensure_ascii=False))
    else:
        for t in tracks:
            done = sum(1 for k in t.tickets if k.status == "completed")
            print(f"{t.id}  {t.status:<15} {done}/{len(t.tickets)}  {t.title}")
            for k in t.tickets:
                print(f"    {k.id:<10} {k.status:<12} {k.description[:70]}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import hook_server
    except ImportError as e:
        return _fail(f"the API server is not available in this build: {e}")
    try:
        ws = _workspace(args.workspace, create=True)
        settings, notices = _settings(ws, args)
    except ValueError as e:
        return _fail(str(e))
    lock, code = _take_lock(ws, "clutch serve")
    if lock is None:
        return code
    with lock:
        for n in notices:
            log.warning(n)
        return hook_server.serve_forever(ws, settings, port=args.port, auto_approve=args.yes)


if __name__ == "__main__":
    sys.exit(main())
