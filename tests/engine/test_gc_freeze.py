"""The heap alive when the first engine starts is kept out of the cyclic garbage collector's
full passes (engine/context.py, `_freeze_startup_heap`): such a pass walks every object, holds
the GIL throughout, and stalled the window and the workers' set-up for 20-35 ms. Run in a
fresh interpreter: the test process's own engines started long before."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import ROOT

_CHILD = textwrap.dedent("""
    import gc, json, sys, weakref
    sys.path.insert(0, sys.argv[1])
    from models import Settings
    from multi_agent_conductor import ConductorEngine

    before = gc.get_freeze_count()
    settings = Settings(offline_pace_s=0.0, git_commits=False)
    eng = ConductorEngine(sys.argv[2], settings).start()
    frozen = gc.get_freeze_count()

    class Node:                           # garbage made after the start is still collected
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    eng2 = ConductorEngine(sys.argv[3], settings).start()     # a second workspace opened
    again = gc.get_freeze_count()
    eng2.close()
    eng.close()
    print(json.dumps({"before": before, "frozen": frozen, "again": again,
                      "collected": gone() is None, "tracked": len(gc.get_objects())}))
""")


def test_the_heap_alive_at_the_first_start_is_frozen_and_later_garbage_still_collected(
        tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(tmp_path / "a"),
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] == 0
    assert got["frozen"] > 20_000, got         # the modules and the engine
    assert got["again"] == got["frozen"], got  # once per process, not at every engine
    assert got["collected"], got               # a cycle made afterwards is collected
    assert got["tracked"] < got["frozen"] / 2, got   # full passes walk what came later only
