"""The quota summary of ``/afhub/api/quota`` from the facility API's answers (pure)."""

from __future__ import annotations

from afhub_server.summary import quota_summary

CHAIN = [
    {
        "group": "atlas/higgs",
        "resets_at": "2027-01-01T00:00:00+00:00",
        "limits": {
            "cpu_core_hours": {"limit": 100.0, "used": 25.0},
            "max_servers": {"limit": 4, "used": 1},
            "gpu_hours": {"limit": None, "used": 3.0},
        },
    },
    {
        "group": "atlas",
        "resets_at": "2027-01-01T00:00:00+00:00",
        "limits": {"gpu_hours": {"limit": 10.0, "used": 9.5}},
    },
]
WARNING = {
    "kind": "server",
    "server_name": "big",
    "group": "atlas/higgs",
    "stops_at": "2026-12-04T22:31:00+00:00",
    "message": "... will be stopped at 2026-12-04T22:31:00+00:00",
}


def test_the_scarcest_limit_of_the_chain_comes_first_and_makes_the_headline():
    me = {"name": "ana", "default_group": "atlas/higgs", "groups": {"atlas/higgs": "member"}}
    summary = quota_summary(me, {"chain": CHAIN}, "atlas/higgs", "")
    assert [(r["group"], r["limit"]) for r in summary["limits"]] == [
        ("atlas", "gpu_hours"),
        ("atlas/higgs", "cpu_core_hours"),
        ("atlas/higgs", "max_servers"),
    ]
    first = summary["limits"][0]
    assert (first["left"], first["used"], first["fraction_left"]) == (0.5, 9.5, 0.05)
    assert first["resets_at"] == "2027-01-01T00:00:00+00:00"
    assert summary["limits"][2]["resets_at"] is None  # a concurrent limit never resets
    assert summary["headline"] == "afhub: atlas/higgs: 0.50 of 10 GPU-hours left (in atlas)"
    assert summary["stop"] is None


def test_a_stop_is_this_servers_only():
    me = {"name": "ana", "warnings": [WARNING]}
    assert quota_summary(me, {"chain": []}, "atlas/higgs", "")["stop"] is None
    summary = quota_summary(me, {"chain": []}, "atlas/higgs", "big")
    assert summary["stop"]["stops_at"] == WARNING["stops_at"]
    assert summary["warnings"] == [WARNING]
    assert summary["headline"] == "afhub: charged to atlas/higgs, no limit set"
