"""Refusals in plain words (issue 13, the spawn form): every kind of refusal says what the
limit is and what the person can do: another group with room (named), waiting (until
something stops, or the reset at a stated time), asking a named admin; a limit of 0 never
advises waiting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from afhub.quotas.decisions import NodeState, decide
from afhub.quotas.limits import Charge, Holdings, Limits, Usage
from afhub.quotas.refusals import after_granting, explain
from afhub.quotas.remaining import describe, full_label, remaining

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
CPU_SERVER = Charge("server", cpu_cores=2)
GPU_SERVER = Charge("server", cpu_cores=4, gpus=1)


def node(path, limits=None, servers=0, gpus=0, dask_cores=0, **hours):
    holdings = Holdings(servers=servers, gpus=gpus, dask_cores=dask_cores)
    return NodeState(path, limits or Limits(), Usage(holdings=holdings, **hours))


def refusal(chain, charge=CPU_SERVER):
    decision = decide(chain, charge, NOW)
    assert not decision.allowed
    return decision.refusals[0]


def test_full_group_names_the_group_with_room_the_wait_and_the_admins():
    full = refusal([node("tight", Limits(max_servers=2), servers=2)])
    advice = explain(full, admins=["alice", "bob"], alternatives=["roomy", "cms"])
    assert advice.text == (
        "You cannot start this server. Group 'tight' is at its limit of 2 concurrent "
        "servers: 2 of 2 in use. You can charge it to another of your groups with room: "
        "'roomy' or 'cms', wait until one of the servers charged to it stops, "
        "or ask an admin of 'tight' (alice, bob) to raise the limit."
    )
    assert advice.resets_at is None
    # without another group or admins it still says whom to ask
    alone = explain(full).text
    assert "another of your groups" not in alone
    assert "ask the facility's administrators to raise the limit" in alone


@pytest.mark.parametrize(
    ("limits", "charge", "nothing"),
    [
        (Limits(max_servers=0), CPU_SERVER, "servers: its limit of concurrent servers is 0"),
        (Limits(max_gpus=0), GPU_SERVER, "GPUs or other accelerators"),
        (Limits(gpu_hours=0), GPU_SERVER, "GPU time: its limit of GPU-hours is 0"),
        (Limits(cpu_core_hours=0), CPU_SERVER, "CPU time"),
    ],
)
def test_a_limit_of_zero_is_no_allowance_and_never_advises_waiting(limits, charge, nothing):
    zero = refusal([node("interns", limits)], charge)
    text = explain(zero, admins=["carol"]).text
    assert f"Group 'interns' has no allowance for {nothing}" in text
    assert "ask an admin of 'interns' (carol) for an allowance" in text
    for wrong in ("wait", "reset", "room frees", "frees"):
        assert wrong not in text
    # the log wording of the decision itself never promises room either
    assert "room frees" not in zero.message
    assert "no allowance" in zero.message


def test_calendar_budget_states_the_reset_time():
    spent = refusal([node("atlas/higgs", Limits(cpu_core_hours=0.002), cpu_core_hours=0.00201)])
    advice = explain(spent, alternatives=["users"])
    assert "Group 'atlas/higgs' has used its CPU core-hours budget for this calendar month" in (
        advice.text
    )
    assert "0.00201 of 0.002 CPU core-hours used" in advice.text
    assert "wait for the reset at 2026-12-01 00:00 UTC" in advice.text
    assert advice.resets_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert advice.reset_text == "2026-12-01 00:00 UTC"
    assert "charge it to another of your groups with room: 'users'" in advice.text


def test_rolling_budget_frees_as_usage_ages_out():
    limits = Limits(gpu_hours=10, period="rolling:7d")
    advice = explain(refusal([node("g", limits, gpu_hours=10)], GPU_SERVER))
    assert "for this rolling 7 days: 10 of 10 GPU-hours used" in advice.text
    assert "wait while older usage drops out of the rolling 7 days window" in advice.text
    assert advice.resets_at is None


def test_a_request_larger_than_the_room_says_how_much_fits():
    over = refusal([node("lab", Limits(max_gpus=3), gpus=1)], Charge("server", 4, gpus=4))
    text = explain(over).text
    assert "Group 'lab' allows 3 concurrent GPUs: 1 in use, and this server needs 4 more." in text
    assert "ask for at most 3 GPUs" in text
    assert "wait" not in text  # 4 never fits under 3
    fits_later = refusal([node("lab", Limits(max_gpus=3), gpus=2)], Charge("server", 4, gpus=2))
    text = explain(fits_later).text
    assert "ask for at most 1 GPU now" in text
    assert "wait until a server holding GPUs charged to it stops" in text


def test_dask_refusal_speaks_of_the_cluster():
    dask = refusal([node("g", Limits(max_dask_cores=4), dask_cores=4)], Charge("dask", 2))
    text = explain(dask, what="Dask cluster").text
    assert text.startswith("You cannot start this Dask cluster.")
    assert "wait until Dask workers charged to it stop" in text


def test_capped_scale_reads_as_after_the_workers_that_fit_start():
    # 1 of 5 cores held (the scheduler); of 4 more 2-core workers, 2 fit: the refusal of 3
    worker = Charge("dask", 2)
    three = refusal([node("g", Limits(max_dask_cores=5), dask_cores=1)], Charge("dask", 6))
    assert (three.used, three.requested) == (1, 6)
    after = after_granting(three, worker, 2)
    assert (after.used, after.requested) == (5, 2)
    text = explain(after, what="Dask cluster", admins=["ann"], opening=False).text
    assert text == (
        "Group 'g' is at its limit of 5 concurrent Dask cores: 5 of 5 in use. You can wait "
        "until Dask workers charged to it stop or ask an admin of 'g' (ann) to raise the limit."
    )
    spent = refusal([node("g", Limits(cpu_core_hours=1), cpu_core_hours=2)], worker)
    assert after_granting(spent, worker, 3) == spent  # a budget's use is time spent


def test_quota_line_says_what_is_left_of_each_limit_and_when_a_group_is_full():
    chain = [
        node("atlas", Limits(max_servers=2, gpu_hours=10), servers=1, gpu_hours=6.5),
        node("atlas/higgs", Limits(max_gpus=4, cpu_core_hours=5), gpus=1, cpu_core_hours=5),
    ]
    room = remaining(chain)
    assert describe(room) == (
        "Quota of atlas/higgs leaves 1 more server (of 2), 3 accelerators (of 4), "
        "3.5 GPU-hours, no CPU core-hours."
    )
    assert full_label(room) == "full: CPU core-hours used up"
    busy = remaining([node("tight", Limits(max_servers=2), servers=2)])
    assert full_label(busy) == "full: 2 of 2 servers"
    assert full_label(remaining([node("none", Limits(max_servers=0))])) == "no servers allowed"
    assert full_label(remaining([node("free")])) is None
