from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from afhub.groups.tree import chain as chain_of
from afhub.quotas.decisions import (
    EnforcementAction,
    NodeState,
    OverBudget,
    decide,
    exhausted_budgets,
    plan_enforcement,
)
from afhub.quotas.limits import Charge, Holdings, LimitName, Limits, Usage

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
GPU_SERVER = Charge("server", cpu_cores=4, gpus=1)
CPU_SERVER = Charge("server", cpu_cores=2)


def node(path, limits=None, **usage):
    holdings = Holdings(
        servers=usage.pop("servers", 0),
        gpus=usage.pop("gpus", 0),
        dask_cores=usage.pop("dask_cores", 0),
    )
    return NodeState(path, limits or Limits(), Usage(holdings=holdings, **usage))


def test_allowed_when_every_node_has_room():
    chain = [node("atlas", Limits(max_servers=10), servers=3), node("atlas/higgs", Limits())]
    decision = decide(chain, GPU_SERVER, NOW)
    assert decision.allowed
    assert decision.message == "allowed"


def test_parent_limit_holds_even_when_child_has_room():
    chain = [
        node("atlas", Limits(max_servers=3), servers=3),
        node("atlas/higgs", Limits(max_servers=10), servers=1),
    ]
    decision = decide(chain, CPU_SERVER, NOW)
    assert not decision.allowed
    (refusal,) = decision.refusals
    assert refusal.group == "atlas"
    assert refusal.limit == LimitName.MAX_SERVERS
    assert (refusal.used, refusal.limit_value) == (3, 3)
    assert "'atlas'" in decision.message
    assert "3/3" in decision.message


def test_budget_refusal_names_group_limit_usage_and_reset():
    chain = [node("atlas"), node("atlas/higgs/students", Limits(gpu_hours=10), gpu_hours=10.0)]
    decision = decide(chain, GPU_SERVER, NOW)
    refusal = decision.refusals[0]
    assert refusal.resets_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert decision.message == (
        "group 'atlas/higgs/students' has used its GPU-hours budget for this calendar month "
        "(UTC): 10/10 GPU-hours used; it resets at 2026-12-01 00:00 UTC"
    )
    assert refusal.to_dict()["resets_at"] == "2026-12-01T00:00:00+00:00"


def test_gpu_budget_does_not_block_cpu_only_servers():
    chain = [node("atlas", Limits(gpu_hours=0, cpu_core_hours=100), cpu_core_hours=5.0)]
    assert decide(chain, CPU_SERVER, NOW).allowed
    assert not decide(chain, GPU_SERVER, NOW).allowed


def test_rolling_budget_message():
    chain = [node("cms", Limits(cpu_core_hours=1, period="rolling:7d"), cpu_core_hours=2.0)]
    decision = decide(chain, CPU_SERVER, NOW)
    assert decision.refusals[0].resets_at is None
    assert "ages out of the rolling 7 days window" in decision.message


def test_concurrent_gpus_and_dask_cores():
    chain = [node("atlas", Limits(max_gpus=2, max_dask_cores=16), gpus=2, dask_cores=10)]
    assert not decide(chain, GPU_SERVER, NOW).allowed
    assert decide(chain, CPU_SERVER, NOW).allowed
    assert decide(chain, Charge("dask", cpu_cores=6), NOW).allowed
    refused = decide(chain, Charge("dask", cpu_cores=7), NOW)
    assert refused.refusals[0].limit == LimitName.MAX_DASK_CORES


def test_refusals_listed_from_charged_group_upwards():
    chain = [
        node("atlas", Limits(max_servers=1), servers=1),
        node("atlas/higgs", Limits(max_servers=1), servers=1),
    ]
    assert [r.group for r in decide(chain, CPU_SERVER, NOW).refusals] == ["atlas/higgs", "atlas"]


def test_exhausted_budgets_and_enforcement_plan():
    chain = [node("atlas", Limits(gpu_hours=5), gpu_hours=5.5)]
    assert exhausted_budgets(chain, CPU_SERVER, NOW) == []
    (spent,) = exhausted_budgets(chain, GPU_SERVER, NOW)
    grace = timedelta(minutes=10)
    items = [
        OverBudget(1, None, spent.message),
        OverBudget(2, NOW - timedelta(minutes=5), spent.message),
        OverBudget(3, NOW - timedelta(minutes=10), spent.message),
    ]
    steps = plan_enforcement(items, NOW, grace)
    assert [(s.interval_id, s.action) for s in steps] == [
        (1, EnforcementAction.WARN),
        (3, EnforcementAction.STOP),
    ]


# --- property: rolled-up usage never lets an ancestor exceed its limit ---------------------

PATHS = ["a", "a/b", "a/c", "a/b/d", "a/b/e", "a/c/f", "a/b/d/g"]


@st.composite
def scenarios(draw):
    limits = {
        p: Limits(
            max_servers=draw(st.none() | st.integers(0, 4)),
            max_gpus=draw(st.none() | st.integers(0, 4)),
        )
        for p in PATHS
    }
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["admit", "release"]),
                st.sampled_from(PATHS),
                st.integers(0, 2),
            ),
            max_size=60,
        )
    )
    return limits, ops


def rolled_up(path, running):
    total = Holdings()
    for group, charge in running:
        if group == path or group.startswith(path + "/"):
            total = total + charge.holdings
    return total


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_rollup_never_lets_an_ancestor_exceed_its_limit(scenario):
    limits, ops = scenario
    running: list[tuple[str, Charge]] = []
    for op, path, gpus in ops:
        if op == "release":
            for i, (group, _) in enumerate(running):
                if group == path:
                    del running[i]
                    break
            continue
        charge = Charge("server", cpu_cores=1, gpus=gpus)
        chain = [
            NodeState(p, limits[p], Usage(holdings=rolled_up(p, running))) for p in chain_of(path)
        ]
        decision = decide(chain, charge, NOW)
        would_exceed = any(
            limits[p].get(name) is not None
            and rolled_up(p, [*running, (path, charge)]).get(name) > limits[p].get(name)
            and charge.holdings.get(name) > 0
            for p in chain_of(path)
            for name in (LimitName.MAX_SERVERS, LimitName.MAX_GPUS)
        )
        # refused exactly when admitting would push some node of the chain over a limit
        assert decision.allowed == (not would_exceed)
        if decision.allowed:
            running.append((path, charge))
        for p in PATHS:
            held = rolled_up(p, running)
            for name in (LimitName.MAX_SERVERS, LimitName.MAX_GPUS):
                limit = limits[p].get(name)
                assert limit is None or held.get(name) <= limit


def test_small_budgets_are_readable_in_messages():
    chain = [node("atlas/higgs", Limits(cpu_core_hours=0.002), cpu_core_hours=0.0021)]
    message = decide(chain, CPU_SERVER, NOW).message
    assert "0.0021/0.002 CPU core-hours used" in message
