"""The key scrub (issue 15, points 3 and 10): any 12-character piece of a key, not only the
whole key, is removed from provider errors, the comms log, tool results, streams and stderr."""
from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ai_client import (AgentSession, CommsLog, GeminiProvider, ProviderError, Scrubber,
                       ToolOutcome)
from models import Price
from providers import secrets as secrets_module
from tests.fakes.fake_gemini import Calls, Fault, Text
from tools import TOOL_SPECS

KEY = "AIzaSyD-scrub" + "Qx7Lm2Vb9Rt4Wk8Pn3Hj6Gf1Dc5"      # 39 characters, like a real key
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# the Scrubber
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("piece", [KEY, KEY[:20], KEY[-12:], KEY[7:19], KEY[3:30]])
def test_any_piece_of_12_or_more_characters_is_removed(piece):
    text = f"error: key '{piece}' is not valid (see docs)"
    out = Scrubber([KEY]).scrub(text)
    assert piece not in out and out == "error: key '[redacted]' is not valid (see docs)"


def test_an_11_character_piece_and_ordinary_text_are_left_alone():
    sc = Scrubber([KEY])
    text = f"the prefix AIza is public; {KEY[5:16]} is 11 characters; ordinary words stay"
    assert sc.scrub(text) is text


def test_pieces_next_to_each_other_and_of_two_keys():
    other = "sk-proj-" + "a1b2c3d4e5f6g7h8i9j0k1l2"
    sc = Scrubber([KEY, other, None, ""])
    text = f"{KEY[:14]}{other[2:20]} then {KEY[20:]}!"
    out = sc.scrub(text)
    assert out == "[redacted] then [redacted]!"


def test_short_and_repeated_secrets():
    assert Scrubber(["short"]).scrub("a short key") == "a short key"     # under 8: ignored
    assert Scrubber(["eight888"]).scrub("x eight888 y") == "x [redacted] y"
    rep = "abcdefabcdefabcdefabcd"                                        # repeats itself
    assert Scrubber([rep]).scrub("--" + rep[4:18] + "--") == "--[redacted]--"


def test_nested_objects_are_scrubbed_without_changing_the_input():
    sc = Scrubber([KEY])
    obj = {"ok": True, "output": f"GEMINI_API_KEY={KEY}\n", "lines": [KEY[:15], 3]}
    out = sc.scrub_obj(obj)
    assert out == {"ok": True, "output": "GEMINI_API_KEY=[redacted]\n",
                   "lines": ["[redacted]", 3]}
    assert obj["output"].endswith(KEY + "\n")


def test_fast_on_a_megabyte():
    rnd = random.Random(5)
    big = "".join(rnd.choice(string.ascii_letters + string.digits + " \n") for _ in range(1 << 20))
    leaky = big[:400_000] + KEY[2:24] + big[400_000:]
    sc = Scrubber([KEY])
    t0 = time.perf_counter()
    for _ in range(5):
        out = sc.scrub(leaky)
    per = (time.perf_counter() - t0) / 5
    assert KEY[2:24] not in out and out.count("[redacted]") == 1
    assert per < 0.1, f"{per * 1000:.1f} ms for 1 MB"          # measured ~3 ms


def test_from_env_and_no_module_state(monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    assert Scrubber.from_env().scrub(KEY[4:20]) == "[redacted]"
    assert KEY not in repr(Scrubber([KEY]))
    # nothing mutable at module level: only constants
    mutable = [n for n, v in vars(secrets_module).items()
               if not n.startswith("__") and isinstance(v, (list, dict, set))]
    assert mutable == []


def test_the_comms_log_writes_no_piece_of_a_key(tmp_path):
    log = CommsLog(tmp_path / "c.jsonl", scrubber=Scrubber([KEY]))
    log.record("error", tier="Tier 3", data={"error": f"bad key {KEY[:20]}", "nested":
                                                 {"x": [KEY[10:30]]}})
    log.close()
    raw = (tmp_path / "c.jsonl").read_text()
    assert KEY[:12] not in raw and KEY[10:22] not in raw and raw.count("[redacted]") == 2
    assert json.loads(raw)["data"]["error"] == "bad key [redacted]"


# ---------------------------------------------------------------------------------------------
# through the real SDK and the fake server
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def provider(srv):
    p = GeminiProvider(api_key=KEY, base_url=srv.base_url, max_retries=0, sleep=lambda s: None)
    yield p
    p.close()


def _session(provider, tmp_path, handler=None, chunks=None):
    return AgentSession(provider, tier="Tier 3", model="gemini-2.5-flash", stream_id="s",
                        system="work", comms=CommsLog(tmp_path / "comms.jsonl"), price=Price(),
                        tools=TOOL_SPECS if handler else (), tool_handler=handler,
                        emit=(lambda ev: chunks.append(getattr(ev, "text", "")))
                        if chunks is not None else None)


def test_a_20_character_prefix_in_an_error_reaches_neither_the_error_nor_the_log(
        srv, provider, tmp_path):
    srv.enqueue(Fault.client_error(400, message=f"API key not valid: {KEY[:20]}..."))
    s = _session(provider, tmp_path)       # the comms log's own scrubber has no key (no env)
    with pytest.raises(ProviderError) as ei:
        s.send("hello")
    s.comms.close()
    assert KEY[:12] not in ei.value.message and "[redacted]" in ei.value.message
    assert KEY[:12] not in str(ei.value)
    assert KEY[:12] not in (tmp_path / "comms.jsonl").read_text()


def test_tool_results_and_stream_text_lose_their_key_pieces(srv, provider, tmp_path):
    leak = f"HOME=/root\nGEMINI_API_KEY={KEY}\nPART={KEY[8:28]}\n"
    srv.enqueue(Calls([("run_shell", {"command": "cat /proc/1/environ"})]),
                Text(f"I saw {KEY[:16]} in there", chunks=2))
    chunks: list[str] = []
    s = _session(provider, tmp_path,
                 handler=lambda call: ToolOutcome({"ok": True, "output": leak}, call.args),
                 chunks=chunks)
    final = s.send("look around")
    s.comms.close()
    sent = json.dumps(srv.requests[1].body)
    assert "HOME=/root" in sent and KEY[:12] not in sent and KEY[8:20] not in sent
    assert KEY[:12] not in (tmp_path / "comms.jsonl").read_text()
    streamed = "".join(chunks)
    assert "[redacted]" in streamed and KEY[:12] not in streamed
    assert final == "I saw [redacted] in there"     # returned (kept as the ticket's result)


def test_clutch_run_prints_no_piece_of_the_key_on_stderr(srv, tmp_path):
    """The whole CLI against the fake server: the API's error names a 20-character prefix of
    the key; neither stderr nor any file of the workspace holds a 12-character piece of it."""
    srv.script(lambda r: Fault.client_error(
        400, message=f"API key not valid. Please pass a valid API key. ({KEY[:20]}...)"))
    ws = tmp_path / "ws"
    (ws / ".clutch").mkdir(parents=True)
    (ws / ".clutch" / "config.toml").write_text(
        f'provider = "gemini"\ngit_commits = false\n[gemini]\nbase_url = "{srv.base_url}"\n'
        f'max_retries = 0\n')
    env = {k: v for k, v in os.environ.items() if "API_KEY" not in k}
    env["GEMINI_API_KEY"] = KEY
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", "--workspace", str(ws),
                          "--epic", "Build a thing.", "--yes", "--json", "-v"],
                         capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert srv.requests, out.stderr                     # the error really came from the server
    assert "[redacted]" in out.stderr + out.stdout, out.stderr
    for piece in (KEY[:12], KEY[4:16], KEY[8:20]):
        assert piece not in out.stderr and piece not in out.stdout
    files = [p for p in ws.rglob("*") if p.is_file()]
    assert any(p.name == "comms.jsonl" for p in files)
    assert [p for p in files if KEY[:12].encode() in p.read_bytes()] == []
