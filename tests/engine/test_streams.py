"""StreamBuffers: the text of ended streams moves to one file and reads back the same, at any
offset; nothing is lost when more text comes after (a retried ticket) or when a write fails."""
from __future__ import annotations

import time

import pytest

from multi_agent_conductor import StreamBuffers

SID = "Tier 3 (Worker): T-001/é"
OTHER = "Tier 3 (Worker): T-002"


def test_spilled_text_reads_back_the_same_at_every_offset(tmp_path):
    path = tmp_path / "streams.txt"
    sb = StreamBuffers(path)
    first = "".join(f"line {i} — ünïcode\n" for i in range(50))
    for i in range(0, len(first), 7):
        sb.append(SID, first[i:i + 7])
    sb.append(OTHER, "still talking")
    sb.set_state(SID, "done")
    assert sb.spill() == 1                       # the live stream stays in memory
    assert path.read_text(encoding="utf-8") == first
    assert sb.text(SID) == first and sb.text(OTHER) == "still talking"
    # a retried ticket streams into the same stream: memory holds only the new part
    sb.append(SID, "attempt 2\n")
    assert sb.info()[SID] == {"length": len(first) + 10, "state": "streaming"}
    whole = first + "attempt 2\n"
    for off in (0, 1, len(first) - 1, len(first), len(first) + 3, len(whole), len(whole) + 5):
        assert sb.text(SID, off) == whole[off:]
    sb.set_state(SID, "failed")
    sb.set_state(OTHER, "done")
    assert sb.spill() == 2                       # both, in one write
    assert sb.text(SID) == whole and sb.text(OTHER) == "still talking"
    for off in (0, len(first) - 1, len(first) + 3, len(whole)):
        assert sb.text(SID, off) == whole[off:]
    assert sb.info()[SID] == {"length": len(whole), "state": "failed"}
    assert sb.spill() == 0


def test_a_failed_spill_keeps_the_text_and_the_next_one_writes_over_it(tmp_path, monkeypatch):
    import builtins
    path = tmp_path / "streams.txt"
    sb = StreamBuffers(path)
    sb.append(SID, "one\n")
    sb.set_state(SID, "done")
    sb.spill()
    sb.append(SID, "two\n")
    sb.set_state(SID, "done")
    real_open = builtins.open

    class Torn:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def seek(self, n):
            self.f.seek(n)

        def truncate(self):
            self.f.truncate()

        def write(self, data):
            self.f.write(data[:2])                  # half of it, then the disk is full
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(builtins, "open", lambda p, mode="r", *a, **k:
                        Torn(real_open(p, mode, *a, **k)) if "+" in mode else
                        real_open(p, mode, *a, **k))
    with pytest.raises(OSError, match="No space"):
        sb.spill()
    monkeypatch.setattr(builtins, "open", real_open)
    assert sb.text(SID) == "one\ntwo\n"             # nothing lost
    sb.append(SID, "three\n")
    sb.set_state(SID, "done")
    sb.spill()
    assert path.read_text() == "one\ntwo\nthree\n"  # the torn bytes were written over
    assert sb.text(SID) == "one\ntwo\nthree\n"


def test_without_a_spill_path_everything_stays_in_memory():
    sb = StreamBuffers()
    sb.append(SID, "abc")
    sb.set_state(SID, "done")
    assert sb.spill() == 0
    assert sb.text(SID, 1) == "bc"
    with pytest.raises(KeyError):
        sb.text("nope")


def test_engine_streams_read_back_after_the_run(workspace):
    from conftest import fast_settings
    from models import Ticket, TrackProposal
    from multi_agent_conductor import ConductorEngine
    with ConductorEngine(workspace, fast_settings(), auto_approve=True) as eng:
        [tr] = eng.accept_tracks([TrackProposal(title="S", goal="g",
                                                acceptance_criteria=["c"])]).result(30)
        eng.set_tickets(tr.id, [Ticket(id="T-1", description="write notes",
                                       target_files=["notes.md"])]).result(30)
        eng.start_track(tr.id).result(60)
        sid = "Tier 3 (Worker): T-1"
        spill = eng.session_dir / "streams.txt"
        deadline = time.monotonic() + 10
        while "notes.md" not in (spill.read_text() if spill.exists() else "") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "notes.md" in spill.read_text(encoding="utf-8")
        text = eng.streams.text(sid)
        assert "notes.md" in text and text in spill.read_text(encoding="utf-8")
        assert eng.streams.info()[sid]["length"] == len(text)


def test_a_resumed_session_keeps_the_earlier_streams_file(tmp_path):
    path = tmp_path / "streams.txt"
    first = StreamBuffers(path)
    first.append(SID, "from the first run\n")
    first.set_state(SID, "done")
    first.spill()
    again = StreamBuffers(path)          # the same session dir, after --resume
    again.append(SID, "after resuming\n")
    again.set_state(SID, "done")
    again.spill()
    assert path.read_text() == "from the first run\nafter resuming\n"
    assert again.text(SID) == "after resuming\n"
