"""DAG helpers, usage arithmetic and cost: the pure parts of models.py."""
from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from models import (DagError, Price, Settings, Ticket, Usage, cost_of, critical_path,
                    dag_problems, file_overlap_warnings, ready_tickets, topological_order,
                    validate_dag)


def T(id, deps=(), files=(), status="todo"):
    return Ticket(id=id, description=f"do {id}", depends_on=list(deps), target_files=list(files),
                  status=status)


def test_unknown_dependency_is_named():
    problems = dag_problems([T("A"), T("B", ["A", "Z"])])
    assert problems == ["B depends on unknown ticket 'Z'"]


def test_duplicate_id_is_named():
    problems = dag_problems([T("A"), T("A"), T("B")])
    assert any("duplicate ticket id 'A'" in p for p in problems)


def test_cycle_message_gives_the_path():
    with pytest.raises(DagError) as ei:
        validate_dag([T("A", ["C"]), T("B", ["A"]), T("C", ["B"]), T("D")])
    msg = str(ei.value)
    assert "cycle:" in msg
    # the path follows execution order and closes on itself
    path = msg.split("cycle: ")[1].split(" -> ")
    assert path[0] == path[-1] and set(path) == {"A", "B", "C"}


def test_self_dependency():
    assert dag_problems([T("A", ["A"])]) == ["A depends on itself"]


def test_every_problem_reported_at_once():
    problems = dag_problems([T("A", ["X"]), T("A"), T("B", ["C"]), T("C", ["B"])])
    assert len(problems) == 3


def test_topological_order_respects_edges_and_keeps_given_order_for_ties():
    ts = [T("A"), T("B", ["A"]), T("C", ["A"]), T("D", ["B", "C"]), T("E")]
    order = topological_order(ts)
    assert order == ["A", "B", "C", "D", "E"] or order.index("A") < order.index("B")
    pos = {x: i for i, x in enumerate(order)}
    for t in ts:
        for d in t.depends_on:
            assert pos[d] < pos[t.id]
    assert order[0] == "A"


def test_ready_set():
    ts = [T("A", status="completed"), T("B", ["A"]), T("C", ["B"]), T("D", status="skipped"),
          T("E", ["D"]), T("F", status="failed"), T("G", ["F"])]
    assert [t.id for t in ready_tickets(ts)] == ["B", "E"]


def test_critical_path():
    ts = [T("A"), T("B", ["A"]), T("C", ["A"]), T("D", ["B", "C"])]
    length, path = critical_path(ts, {"A": 1, "B": 5, "C": 1, "D": 1})
    assert length == 7 and path == ["A", "B", "D"]


def test_file_overlap_only_for_tickets_that_may_run_in_parallel():
    ts = [T("A", files=["x.py"]), T("B", ["A"], files=["x.py"]), T("C", files=["./x.py"]),
          T("D", ["A"], files=["y.py"]), T("E", ["A"], files=["y.py"])]
    w = file_overlap_warnings(ts)
    assert "A and C may run in parallel and both target x.py" in w
    assert any("B and C" in x for x in w)
    assert "D and E may run in parallel and both target y.py" in w
    assert not any(x.startswith("A and B") for x in w)   # B depends on A: sequential


def test_usage_adds_up():
    a = Usage(input_tokens=10, output_tokens=5, cached_tokens=2, thoughts_tokens=1,
              total_tokens=16, requests=1, cost_usd=0.5)
    b = Usage(input_tokens=1, output_tokens=1, total_tokens=2, requests=1, cost_usd=0.25)
    s = a + b
    assert (s.input_tokens, s.output_tokens, s.cached_tokens, s.total_tokens, s.requests) == \
        (11, 6, 2, 18, 2)
    assert s.cost_usd == pytest.approx(0.75)


def test_cost_charges_cached_tokens_at_their_own_rate():
    p = Price(input=1.0, output=10.0, cached=0.25)
    u = Usage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=100_000,
              thoughts_tokens=100_000)
    assert cost_of(u, p) == pytest.approx(0.6 + 0.1 + 2.0)


def test_price_lookup_by_model_prefix():
    s = Settings()
    assert s.price_for("gemini-2.5-flash-lite-001").input == s.prices["gemini-2.5-flash-lite"].input
    assert s.price_for("unknown-model").input == 0.0


# -- property: any valid DAG -> a topological order that contains every ticket once -------
@st.composite
def dags(draw):
    n = draw(st.integers(1, 30))
    ts = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=min(i, 4))) if i else []
        ts.append(T(f"T{i}", [f"T{d}" for d in deps]))
    perm = draw(st.permutations(ts))
    return list(perm)


@given(dags())
@hsettings(max_examples=150, deadline=None)
def test_topological_order_property(ts):
    order = topological_order(ts)
    assert sorted(order) == sorted(t.id for t in ts)
    pos = {x: i for i, x in enumerate(order)}
    for t in ts:
        for d in t.depends_on:
            assert pos[d] < pos[t.id]


def test_shell_allowlist_only_lets_simple_commands_through():
    from models import ApprovalPolicy
    p = ApprovalPolicy(shell_allowlist=["ls", "pytest"])
    assert p.shell_allowed("ls -la src")
    # pytest is a program the built-in rules look into: without the evaluator it asks
    assert not p.shell_allowed("pytest -q tests")
    for cmd in ["rm -rf x", "ls && rm -rf x", "ls; rm x", "ls | sh", "ls $(rm x)", "ls `rm x`",
                "ls > /etc/x", "ls\nrm x", "", "lsx"]:
        assert not p.shell_allowed(cmd), cmd


def test_shell_allowlist_bad_entries_are_refused_clearly():
    from pydantic import ValidationError
    from models import ApprovalPolicy
    for bad in ["", "rm -rf", "ls;", "*"]:
        with pytest.raises(ValidationError, match="one plain command name"):
            ApprovalPolicy(shell_allowlist=[bad])
