"""Soak: 200 tickets, 8 workers, offline model at full speed, approvals answered in random order
by another thread, run again and again for SOAK_SECONDS (default 120); prints RSS (and Python's
allocated blocks) every 10 s so a reader can see whether memory stays flat after the first
minute.

SOAK_TRACKS=same (default): the same 200-ticket track is run again each round (its tickets set
afresh), so the work done grows and the plan does not: memory should be flat.
SOAK_TRACKS=new: a new 200-ticket track each round, so the plan grows by 200 tickets a round
(the engine holds every track of the workspace): the growth per ticket is printed."""
from __future__ import annotations

import os
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from models import Approved, Denied, Settings, TrackProposal  # noqa: E402
from multi_agent_conductor import ConductorEngine  # noqa: E402
from test_soak import soak_tickets  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "120"))
    ws = Path(tempfile.mkdtemp(prefix="clutch-soak-"))
    rng = random.Random(1)
    stop = threading.Event()
    samples = []
    t0 = time.monotonic()
    with ConductorEngine(ws, Settings(offline_pace_s=0, git_commits=False, max_workers=8),
                         auto_approve=False) as eng:
        def approver():
            while not stop.is_set():
                p = eng.pending_approvals()
                rng.shuffle(p)
                for r in p:
                    try:
                        eng.resolve(r.id, Approved())
                    except Exception as e:  # answered meanwhile: report, go on
                        print("approval:", e, file=sys.stderr)
                eng.inbox.drain()
                time.sleep(0.002)
        threading.Thread(target=approver, daemon=True).start()
        rounds = 0
        next_sample = 0.0
        same = os.environ.get("SOAK_TRACKS", "same") != "new"
        tr = None
        while time.monotonic() - t0 < seconds:
            if tr is None or not same:
                [tr] = eng.accept_tracks([TrackProposal(title=f"Soak {rounds}", goal="g",
                                                        acceptance_criteria=["c"])]).result(30)
            ts = soak_tickets(200, 0 if same else rounds)
            if not same:
                for t in ts:   # unique ids across rounds
                    t.id = f"R{rounds}-{t.id}"
                    t.depends_on = [f"R{rounds}-{d}" for d in t.depends_on]
                    t.target_files = [f"soak{rounds}/{Path(f).name}" for f in t.target_files]
            eng.set_tickets(tr.id, ts).result(30)
            fut = eng.start_track(tr.id)
            while not fut.done():
                el = time.monotonic() - t0
                if el >= next_sample:
                    samples.append((el, rss_mb(), sys.getallocatedblocks(), rounds))
                    print(f"t={el:6.1f}s rss={samples[-1][1]:7.1f} MB "
                          f"blocks={samples[-1][2]:,} rounds={rounds}", flush=True)
                    next_sample += 10
                time.sleep(0.2)
            track = fut.result()
            assert all(t.status == "completed" for t in track.tickets), "a ticket did not complete"
            rounds += 1
        stop.set()
    after = [(t, m, b, r) for t, m, b, r in samples if t >= 60]
    print(f"tracks: {'the same one, run again each round' if same else 'a new one each round'}; "
          f"tickets completed: {rounds * 200} in {time.monotonic() - t0:.0f} s")
    if len(after) >= 2:
        (t1, m1, b1, r1), (t2, m2, b2, r2) = after[0], after[-1]
        per = (f" ({(m2 - m1) * 1e3 / max(1, (r2 - r1) * 200):.1f} KB per ticket added)"
               if not same else "")
        print(f"RSS after the first minute: min {min(x[1] for x in after):.1f} MB, max "
              f"{max(x[1] for x in after):.1f} MB, {m1:.1f} -> {m2:.1f} MB over "
              f"{t2 - t1:.0f} s, {(r2 - r1) * 200:,} tickets{per}; "
              f"Python blocks {b1:,} -> {b2:,}; peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
