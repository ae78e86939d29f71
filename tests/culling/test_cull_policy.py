"""The pure culling decision: per-kind idle timeouts, maximum age, the kind of a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from afhub.culling import (
    DEFAULT_KIND,
    CullPolicy,
    ServerActivity,
    decide,
    kind_of,
    server_kinds,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = CullPolicy(timeouts={"cpu": 3600, "gpu": 1200, "fpga": 1200})


def server(kind="cpu", idle_s=None, age_s=None, user="ann", name=""):
    return ServerActivity(
        user=user,
        server_name=name,
        kind=kind,
        last_activity=None if idle_s is None else NOW - timedelta(seconds=idle_s),
        started=None if age_s is None else NOW - timedelta(seconds=age_s),
    )


def test_gpu_and_fpga_idle_as_long_as_a_cpu_server_are_culled_and_it_is_not():
    for kind in ("gpu", "fpga"):
        decision = decide(server(kind, idle_s=1800, age_s=7200), POLICY, NOW)
        assert decision.cull
        assert decision.reason == "idle"
        assert decision.timeout == 1200
    cpu = decide(server("cpu", idle_s=1800, age_s=7200), POLICY, NOW)
    assert not cpu.cull
    assert cpu.timeout == 3600
    assert cpu.idle == timedelta(seconds=1800)
    assert cpu.age == timedelta(seconds=7200)


def test_the_timeout_is_reached_at_exactly_its_length_not_a_second_before():
    assert decide(server("gpu", idle_s=1200, age_s=5000), POLICY, NOW).cull
    assert not decide(server("gpu", idle_s=1199, age_s=5000), POLICY, NOW).cull
    assert decide(server("cpu", idle_s=3600, age_s=5000), POLICY, NOW).cull
    assert not decide(server("cpu", idle_s=3599, age_s=5000), POLICY, NOW).cull


def test_unknown_kinds_get_the_cpu_timeout():
    assert POLICY.timeout_for("tpu") == 3600
    assert not decide(server("tpu", idle_s=1800, age_s=9000), POLICY, NOW).cull
    assert decide(server("tpu", idle_s=3600, age_s=9000), POLICY, NOW).cull


def test_no_activity_recorded_yet_counts_idle_time_from_the_start():
    decision = decide(server("gpu", idle_s=None, age_s=1300), POLICY, NOW)
    assert decision.cull
    assert decision.idle == timedelta(seconds=1300)
    assert not decide(server("gpu", idle_s=None, age_s=1000), POLICY, NOW).cull


def test_a_server_with_neither_activity_nor_start_is_never_culled():
    decision = decide(server("gpu"), CullPolicy({"cpu": 1, "gpu": 1}, max_age=1), NOW)
    assert not decision.cull
    assert decision.idle is None
    assert decision.age is None


def test_timeout_zero_never_culls_that_kind_for_idleness_but_max_age_still_applies():
    policy = CullPolicy(timeouts={"cpu": 0, "gpu": 600}, max_age=86400)
    assert not decide(server("cpu", idle_s=10**6, age_s=3600), policy, NOW).cull
    old = decide(server("cpu", idle_s=10**6, age_s=86400), policy, NOW)
    assert old.cull
    assert old.reason == "max_age"


def test_max_age_culls_an_active_server():
    policy = CullPolicy(timeouts={"cpu": 3600}, max_age=8 * 3600)
    active_old = decide(server("cpu", idle_s=5, age_s=9 * 3600), policy, NOW)
    assert active_old.cull
    assert active_old.reason == "max_age"
    assert not decide(server("cpu", idle_s=5, age_s=7 * 3600), policy, NOW).cull
    # without a maximum age, an active server runs as long as it likes
    assert not decide(server("cpu", idle_s=5, age_s=10**7), POLICY, NOW).cull


@pytest.mark.parametrize(
    ("timeouts", "max_age", "message"),
    [
        ({"gpu": 60}, 0, "timeout for 'cpu'"),
        ({"cpu": 60, "gpu": -1}, 0, "gpu servers must be >= 0"),
        ({"cpu": 60}, -5, "maximum server age"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused_with_a_message(timeouts, max_age, message):
    with pytest.raises(ValueError, match=message):
        CullPolicy(timeouts=timeouts, max_age=max_age)


def test_the_log_line_names_user_server_kind_and_idle_time():
    activity = server("gpu", idle_s=1805, age_s=4000, user="bob", name="big-fit")
    line = decide(activity, POLICY, NOW).describe(activity)
    assert "user bob" in line
    assert "server big-fit" in line
    assert "kind gpu" in line
    assert "idle 00:30:05" in line
    assert "1200 s" in line
    default = server("cpu", idle_s=10, age_s=99999, user="bob")
    old = decide(default, CullPolicy({"cpu": 3600}, max_age=3600), NOW)
    assert "server (default)" in old.describe(default)
    assert "maximum age" in old.describe(default)


def test_the_kind_of_a_server_comes_from_its_resource_in_the_registry():
    kinds = {"a100": "gpu", "u250": "fpga", "big-cpu": "cpu"}
    assert kind_of("a100", kinds) == "gpu"
    assert kind_of("u250", kinds) == "fpga"
    # the built-in local server, a resource removed since, no resource at all
    assert kind_of("local", kinds) == DEFAULT_KIND == "cpu"
    assert kind_of("", kinds) == "cpu"
    assert kind_of(None, kinds) == "cpu"
    open_servers = [("ann", "", "local"), ("ann", "fit", "a100"), ("bob", "", "u250")]
    assert server_kinds(open_servers, kinds) == {
        ("ann", ""): "cpu",
        ("ann", "fit"): "gpu",
        ("bob", ""): "fpga",
    }
