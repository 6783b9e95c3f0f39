"""Bad input gets a clear message and nothing is lost."""
from __future__ import annotations

import json

from ai_client import FunctionProvider, ModelResponse, OfflineProvider, ToolCall
from conftest import fast_settings
from models import Ticket, TrackProposal, Usage


def test_corrupt_config_is_kept_aside_defaults_used_user_told(workspace):
    from multi_agent_conductor import ConductorEngine
    cfg = workspace / ".clutch/config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("max_workers = [[[ not toml\n")
    with ConductorEngine(workspace, None, auto_approve=True) as eng:
        assert eng.settings.max_workers == 4                      # defaults
        notes = " ".join(eng.notices)
        assert "config.toml" in notes and "bad" in notes
        backups = list(cfg.parent.glob("config.toml.bad-*"))
        assert backups and "not toml" in backups[0].read_text()   # nothing lost


def test_corrupt_state_toml_keeps_the_file_and_flags_the_track(workspace):
    from multi_agent_conductor import ConductorEngine
    with ConductorEngine(workspace, fast_settings(), auto_approve=True) as eng:
        [tr] = eng.accept_tracks([TrackProposal(title="Core: x", goal="g",
                                                acceptance_criteria=["c"])]).result(10)
        eng.set_tickets(tr.id, [Ticket(id="T-001", description="a")]).result(10)
    state = workspace / "conductor/tracks" / tr.id / "state.toml"
    state.write_text("this is = = not toml\n")
    with ConductorEngine(workspace, fast_settings(), auto_approve=True) as eng:
        t = eng.track(tr.id)
        assert t.status == "needs_attention"
        assert any("state.toml" in p for p in t.problems)
        assert any("state.toml" in n for n in eng.notices)
        assert [k.description for k in t.tickets] == ["a"]       # loaded from plan.md
    assert state.read_text() == "this is = = not toml\n"          # kept as it was


def test_binary_junk_in_tool_output_does_not_break_the_log(make_engine, workspace):
    def fn(req):
        if req.tier != "Tier 3":
            return OfflineProvider(pace_s=0).generate(req, lambda s: None)
        if not any(m.role == "model" for m in req.messages):
            return ModelResponse(text="junk", tool_calls=[ToolCall(
                "c1", "run_shell", {"command": "head -c 3000 /dev/urandom; printf '\\x00\\xff\\xfe'"})],
                usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2, requests=1))
        return "done"
    eng = make_engine(provider=FunctionProvider(fn))
    [tr] = eng.accept_tracks([TrackProposal(title="J", goal="g", acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(tr.id, [Ticket(id="T-001", description="a")]).result(10)
    track = eng.start_track(tr.id).result(20)
    assert track.tickets[0].status == "completed"
    for line in (eng.session_dir / "comms.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line)                                          # every line still parses
    res = [e for e in eng.comms.entries() if e["kind"] == "tool_result"][0]["data"]["result"]
    assert res["ok"] is True and isinstance(res["output"], str)


def test_tier2_output_not_matching_the_schema_fails_clearly(make_engine):
    import pytest
    from ai_client import PlanError
    eng = make_engine(provider=FunctionProvider(lambda r: json.dumps({"tickets": [{"id": 5}]})))
    [tr] = eng.accept_tracks([TrackProposal(title="S", goal="g", acceptance_criteria=["c"])]).result(10)
    with pytest.raises(PlanError, match=r"tickets\.0\.(id|description)"):
        eng.plan_track(tr.id).result(10)
    assert eng.track(tr.id).tickets == []                         # nothing half-applied


def test_policy_with_a_bad_allowlist_in_config_is_refused_clearly(workspace):
    from multi_agent_conductor import ConductorEngine
    cfg = workspace / ".clutch/config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('[approvals]\nshell_allowlist = ["rm -rf /"]\n')
    with ConductorEngine(workspace, None, auto_approve=True) as eng:
        assert eng.settings.approvals.shell_allowlist == []
        assert any("one plain command name" in n for n in eng.notices), eng.notices
