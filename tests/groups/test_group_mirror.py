from afhub.groups.mirror import MirrorPlan, plan_mirror


def test_plan_creates_fills_and_prunes_only_managed_groups():
    plan = plan_mirror(
        {"atlas": ["ann"], "atlas/higgs": ["hana", "sam"], "cms": []},
        {"atlas": ["ann", "old"], "atlas/higgs": ["hana"], "gone": ["x"], "oauth-group": ["y"]},
        managed=["gone", "atlas"],
    )
    assert plan == MirrorPlan(
        create_groups=["cms"],
        delete_groups=["gone"],
        add_members={"atlas/higgs": ["sam"]},
        remove_members={"atlas": ["old"]},
    )
    assert not plan.empty


def test_plan_is_empty_when_in_sync():
    members = {"atlas": ["ann"], "atlas/higgs": []}
    assert plan_mirror(members, members).empty
