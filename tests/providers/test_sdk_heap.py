"""A provider's SDK, loaded after the app started, is kept out of the cyclic GC's full passes
(providers/sdk_heap.py) as the startup heap is (engine/context.py): google-genai alone brings
~50,000 tracked objects, and a full pass walked them all, holding the GIL. Run in a fresh
interpreter: the test process has imported every SDK long before."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import ROOT

_CHILD = textwrap.dedent("""
    import gc, json, sys, time
    sys.path.insert(0, sys.argv[1])
    from models import Settings
    from multi_agent_conductor import ConductorEngine
    from providers.gemini import GeminiProvider
    from providers.openai_chat import OpenAIChatProvider

    eng = ConductorEngine(sys.argv[2], Settings(offline_pace_s=0.0, git_commits=False)).start()
    started = gc.get_freeze_count()
    loaded = "google.genai" in sys.modules
    GeminiProvider("k", base_url="http://127.0.0.1:9")
    with_genai = gc.get_freeze_count()
    GeminiProvider("k", base_url="http://127.0.0.1:9")       # built again: nothing more
    again = gc.get_freeze_count()
    OpenAIChatProvider("k", base_url="http://127.0.0.1:9/v1")  # another SDK: its own freeze
    with_openai = gc.get_freeze_count()
    t0 = time.perf_counter()
    gc.collect()
    full_pass = time.perf_counter() - t0
    eng.close()
    print(json.dumps({"started": started, "loaded": loaded, "with_genai": with_genai,
                      "again": again, "with_openai": with_openai,
                      "tracked": len(gc.get_objects()), "full_pass_ms": full_pass * 1000}))
""")


def test_an_sdk_loaded_after_the_start_is_frozen_once_and_full_passes_skip_it(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not got["loaded"], got                              # lazily: not at the start
    assert got["with_genai"] > got["started"] + 20_000, got    # google-genai's objects
    assert got["again"] == got["with_genai"], got              # once per process
    assert got["with_openai"] > got["again"], got
    assert got["tracked"] < 20_000, got      # a full pass walks what came after, not the SDKs
