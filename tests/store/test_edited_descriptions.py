"""A ticket's description rewritten in the app, however much, rewrites its own plan.md line:
no second line, and no ghost ticket read back from the old one (the match was by text
similarity to the new description, so a thorough rewrite left the old line behind)."""
from __future__ import annotations

from conftest import fast_settings
from models import Ticket, TrackProposal


def test_a_rewritten_description_replaces_its_line_and_reads_back_whole(workspace):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings(), auto_approve=True).start()
    try:
        [t] = eng.accept_tracks([TrackProposal(title="Core: x", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
        eng.set_tickets(t.id, [Ticket(id="T-001", description="Write the greeting module"),
                               Ticket(id="T-002", description="Test it", depends_on=["T-001"])]
                        ).result(10)
        eng.set_tickets(t.id, [Ticket(id="T-001", description="A CSV parser, nothing alike"),
                               Ticket(id="T-002", description="Test it", depends_on=["T-001"])]
                        ).result(10)
    finally:
        eng.close()
    plan = (workspace / "conductor" / "tracks" / t.id / "plan.md").read_text()
    assert "Write the greeting module" not in plan
    assert plan.count("- [ ] Task:") == 2 and "- [ ] Task: A CSV parser, nothing alike" in plan
    again = ConductorEngine(workspace, fast_settings())
    try:
        assert [(k.id, k.description) for k in again.track(t.id).tickets] == \
            [("T-001", "A CSV parser, nothing alike"), ("T-002", "Test it")]
    finally:
        again.close()
