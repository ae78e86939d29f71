import math

import pytest

from afhub.quotas.limits import (
    Charge,
    Holdings,
    InvalidQuota,
    LimitName,
    Limits,
    ceiling_of,
    check_within,
    parse_limits,
)


def test_parse_limits_accepts_numbers_strings_and_null():
    limits = parse_limits({"gpu_hours": "10.5", "max_servers": 3, "max_gpus": None})
    assert limits == Limits(gpu_hours=10.5, max_servers=3)
    assert parse_limits({"period": "rolling:7d"}, base=limits).period == "rolling:7d"
    assert parse_limits({}, base=limits) == limits


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"gpu_hours": -1}, "must not be negative"),
        ({"gpu_hours": "lots"}, "must be a number"),
        ({"gpu_hours": math.nan}, "finite"),
        ({"gpu_hours": math.inf}, "finite"),
        ({"gpu_hours": True}, "must be a number"),
        ({"gpu_hours": [1]}, "must be a number"),
        ({"max_servers": 1.5}, "whole number"),
        ({"max_servers": 1e12}, "at most"),
        ({"gpus": 1}, "unknown quota field"),
        ({"period": "weekly"}, "unknown period"),
    ],
)
def test_parse_limits_rejects_bad_values(values, fragment):
    with pytest.raises(InvalidQuota) as info:
        parse_limits(values)
    assert fragment in str(info.value)


def test_ceiling_is_the_lowest_limit_on_the_chain():
    ceiling = ceiling_of(
        [
            ("atlas", Limits(gpu_hours=100, max_servers=5)),
            ("atlas/higgs", Limits(gpu_hours=200, max_servers=2)),
        ]
    )
    assert ceiling == {
        LimitName.GPU_HOURS: (100, "atlas"),
        LimitName.MAX_SERVERS: (2, "atlas/higgs"),
    }
    check_within(Limits(gpu_hours=100, max_servers=2, cpu_core_hours=1e6), ceiling)
    with pytest.raises(InvalidQuota, match="'atlas'"):
        check_within(Limits(gpu_hours=101), ceiling)
    with pytest.raises(InvalidQuota, match="'atlas/higgs'"):
        check_within(Limits(max_servers=3), ceiling)


def test_charge_holdings_and_rates():
    server = Charge("server", cpu_cores=4, gpus=1, resource="gpu-small")
    assert server.holdings == Holdings(servers=1, gpus=1, dask_cores=0)
    assert server.rate(LimitName.GPU_HOURS) == 1.0
    assert server.rate(LimitName.CPU_CORE_HOURS) == 4.0
    dask = Charge("dask", cpu_cores=8)
    assert dask.holdings == Holdings(servers=0, gpus=0, dask_cores=8)
    with pytest.raises(ValueError, match="'notebook' is not a valid ChargeKind"):
        Charge("notebook")
    with pytest.raises(InvalidQuota):
        Charge("server", cpu_cores=-1)
    with pytest.raises(InvalidQuota):
        Charge("server", gpus=0.5)
