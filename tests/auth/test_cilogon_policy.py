"""Unit tests of afhub's CILogon policy: pure helpers and authenticator construction."""

import asyncio
from pathlib import Path

import pytest
import yaml
from tornado import web
from traitlets.config import Config

from afhub.auth.cilogon import AfhubCILogonAuthenticator
from afhub.auth.group_claims import map_groups, normalize_group_claim
from afhub.auth.idp_policy import (
    IdpPolicy,
    PolicyError,
    UsernameError,
    build_idps,
    check_no_merge,
    derive_username,
    email_domain_allowed,
    entity_id_domain,
    parse_identity_providers,
    parse_idp_policy,
)
from afhub.auth.redirects import _same_site_path

A = "https://idp.a.edu/idp/shibboleth"
B = "https://login.b.edu/idp/shibboleth"
G = "http://github.com/login/oauth/authorize"

POLICY = {
    A: {"name": "University A", "strip_domain": "a.edu", "allowed_email_domains": ["a.edu"]},
    B: {"name": "University B", "prefix": "b", "strip_domain": "b.edu", "allow_all": True},
    G: {"name": "GitHub", "username_claim": "preferred_username", "prefix": "github"},
}


# --- identity-provider policy -------------------------------------------------------


def test_parse_defaults():
    policy = parse_idp_policy(A, {})
    assert policy == IdpPolicy(entity_id=A, name=A)
    assert policy.username_claim == "eppn"
    assert policy.prefix is None
    assert policy.strip_domain is None
    assert policy.allowed_email_domains == ()
    assert policy.allow_all is False


def test_parse_global_email_domains_only_fill_in():
    policies = parse_identity_providers(
        {A: {"allowed_email_domains": ["A.EDU"]}, B: {"prefix": "b"}}, ["*.b.edu"]
    )
    assert policies[A].allowed_email_domains == ("a.edu",)
    assert policies[B].allowed_email_domains == ("*.b.edu",)


@pytest.mark.parametrize(
    ("entity_id", "domain"),
    [
        ("https://idp.a.edu/idp/shibboleth", "idp.a.edu"),
        ("urn:mace:incommon:uchicago.edu", "uchicago.edu"),
        ("http://google.com/accounts/o8/id", "google.com"),
        ("urn:mace:incommon:nodomain", None),
        ("https://127.0.0.1/idp", None),
    ],
)
def test_entity_id_domain(entity_id, domain):
    assert entity_id_domain(entity_id) == domain


@pytest.mark.parametrize(
    ("entity_id", "entry", "message"),
    [
        ("idp.a.edu", {}, "entity ids"),
        (A, {"prefx": "a"}, "unknown keys"),
        (A, {"prefix": "A"}, "prefix"),
        (A, {"prefix": "a:b"}, "prefix"),
        (A, {"prefix": ""}, "prefix"),
        (A, {"username_claim": ""}, "username_claim"),
        (A, {"strip_domain": "b.edu"}, "not this IdP's own domain"),
        (A, {"strip_domain": "phys.a.edu"}, "not this IdP's own domain"),
        ("urn:mace:incommon:nodomain", {"strip_domain": "a.edu"}, "own domain"),
        (A, {"strip_domain": "not a domain"}, "not a domain name"),
        (A, {"allowed_email_domains": "a.edu"}, "list of domains"),
        (A, {"allowed_email_domains": ["*"]}, "email domain"),
        (A, {"allowed_email_domains": ["a*.edu"]}, "email domain"),
        (A, {"allow_all": "yes"}, "allow_all"),
        (A, "a.edu", "mapping"),
    ],
)
def test_parse_refuses_bad_entries(entity_id, entry, message):
    with pytest.raises(PolicyError, match=message):
        parse_idp_policy(entity_id, entry)


def test_strip_domain_may_be_parent_of_idp_host():
    assert parse_idp_policy(A, {"strip_domain": "A.edu"}).strip_domain == "a.edu"
    assert parse_idp_policy(A, {"strip_domain": "idp.a.edu"}).strip_domain == "idp.a.edu"


def test_two_home_idps_refused():
    with pytest.raises(PolicyError, match="more than one IdP has no prefix"):
        parse_identity_providers({A: {"strip_domain": "a.edu"}, B: {"strip_domain": "b.edu"}})


def test_shared_prefix_refused():
    with pytest.raises(PolicyError, match="prefix 'x' is used by both"):
        parse_identity_providers({A: {}, B: {"prefix": "x"}, G: {"prefix": "x"}})


def test_empty_policy_refused():
    with pytest.raises(PolicyError, match="at least one"):
        check_no_merge({})


def test_two_default_idps_refused():
    with pytest.raises(PolicyError, match="more than one default"):
        parse_identity_providers({A: {"default": True}, B: {"prefix": "b", "default": True}})


def test_all_prefixed_is_fine():
    policies = parse_identity_providers({A: {"prefix": "a"}, B: {"prefix": "b"}})
    assert {p.prefix for p in policies.values()} == {"a", "b"}


def test_build_idps():
    idps = build_idps(parse_identity_providers(POLICY))
    assert idps == {
        A: {
            "username_derivation": {
                "username_claim": "eppn",
                "action": "strip_idp_domain",
                "domain": "a.edu",
            },
            "allow_all": False,
            "allowed_domains": ["a.edu"],
            "allowed_domains_claim": "email",
            "default": True,
        },
        B: {
            "username_derivation": {"username_claim": "eppn", "action": "prefix", "prefix": "b"},
            "allow_all": True,
        },
        G: {
            "username_derivation": {
                "username_claim": "preferred_username",
                "action": "prefix",
                "prefix": "github",
            },
            "allow_all": False,
        },
    }


def test_build_idps_explicit_default():
    idps = build_idps(parse_identity_providers({A: {}, G: {"prefix": "gh", "default": True}}))
    assert idps[G]["default"] is True
    assert "default" not in idps[A]


# --- usernames -----------------------------------------------------------------------


@pytest.fixture
def policies():
    return parse_identity_providers(POLICY)


def test_same_local_name_from_two_idps_gives_two_usernames(policies):
    alice_a = derive_username(policies[A], {"eppn": "alice@a.edu"})
    alice_b = derive_username(policies[B], {"eppn": "alice@b.edu"})
    assert alice_a == "alice"
    assert alice_b == "b:alice"
    assert alice_a != alice_b


def test_username_normalised(policies):
    assert derive_username(policies[A], {"eppn": "  Alice.Smith@A.EDU "}) == "alice.smith"
    assert derive_username(policies[G], {"preferred_username": "Octo-Cat"}) == "github:octo-cat"


@pytest.mark.parametrize(
    ("idp", "claims", "message"),
    [
        (A, {}, "did not release"),
        (A, {"eppn": ""}, "did not release"),
        (A, {"eppn": ["alice@a.edu"]}, "did not release"),
        # a value outside the IdP's domain is refused, never kept whole or merged
        (A, {"eppn": "alice@b.edu"}, "not in its own domain"),
        (A, {"eppn": "alice@sub.a.edu"}, "not in its own domain"),
        (A, {"eppn": "alice"}, "not in its own domain"),
        (A, {"eppn": "@a.edu"}, "not in its own domain"),
        (A, {"eppn": "al@ice@a.edu"}, "valid afhub username"),
        (A, {"eppn": "b:alice@a.edu"}, "valid afhub username"),
        (A, {"eppn": "../x@a.edu"}, "valid afhub username"),
        (A, {"eppn": "al ice@a.edu"}, "valid afhub username"),
        (A, {"eppn": "ålice@a.edu"}, "valid afhub username"),
        (G, {"preferred_username": "x/y"}, "valid afhub username"),
        (G, {"preferred_username": "a:b"}, "valid afhub username"),
        (G, {"preferred_username": "x" * 130}, "too long"),
    ],
)
def test_username_refusals(policies, idp, claims, message):
    with pytest.raises(UsernameError, match=message):
        derive_username(policies[idp], claims)


def test_unstripped_values_keep_their_domain():
    policy = parse_idp_policy(G, {"username_claim": "email", "prefix": "gh"})
    assert derive_username(policy, {"email": "Alice@Example.org"}) == "gh:alice@example.org"


def test_no_two_idps_share_a_username(policies):
    """Every claim value some IdP accepts, through every IdP: no name appears twice."""
    values = ["alice", "alice@a.edu", "alice@b.edu", "a:alice", "b:alice", "b-alice@a.edu"]
    seen: dict[str, tuple[str, str]] = {}
    for idp, policy in policies.items():
        for value in values:
            claims = {policy.username_claim: value}
            try:
                name = derive_username(policy, claims)
            except UsernameError:
                continue
            assert name not in seen or seen[name][0] == idp, (name, seen[name], (idp, value))
            seen[name] = (idp, value)
    assert {"alice", "b:alice", "github:alice"} <= set(seen)


# --- email domains -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "patterns", "allowed"),
    [
        ("alice@a.edu", ["a.edu"], True),
        ("Alice@A.EDU", ["a.edu"], True),
        ("alice@phys.a.edu", ["a.edu"], False),
        ("alice@phys.a.edu", ["*.a.edu"], True),
        ("alice@a.edu", ["*.a.edu"], False),
        ("alice@evila.edu", ["*.a.edu"], False),
        ("alice@a.edu.evil.com", ["a.edu"], False),
        ("alice@b.edu@a.edu", ["a.edu"], False),
        ("alice", ["a.edu"], False),
        (None, ["a.edu"], False),
        ("alice@a.edu", [], False),
    ],
)
def test_email_domain_allowed(email, patterns, allowed):
    assert email_domain_allowed(email, patterns) is allowed


# --- groups --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "groups"),
    [
        (["CO:a", "CO:b", "CO:a", " ", "CO:c "], ["CO:a", "CO:b", "CO:c"]),
        ("CO:a, CO:b,,CO:a", ["CO:a", "CO:b"]),
        ("CO:a", ["CO:a"]),
        (None, []),
        ("", []),
        (42, []),
        ({"CO:a": True}, []),
        (["CO:a", 3, None, ["CO:b"]], ["CO:a"]),
    ],
)
def test_normalize_group_claim(value, groups):
    assert normalize_group_claim(value) == groups


def test_map_groups():
    claims = [
        "CO:COU:atlas-af:members:active",
        "CO:COU:afhub-physics",
        "CO:COU:afhub-",
        "CO:COU:afhub-bad name",
        "unrelated",
    ]
    group_map = {"CO:COU:atlas-af:members:active": "atlas"}
    assert map_groups(claims, group_map, ["CO:COU:afhub-"]) == {"atlas", "physics"}
    assert map_groups(claims, group_map) == {"atlas"}
    # kept whole only when valid afhub group paths (lowercase segments joined by "/")
    assert map_groups([*claims, "atlas/higgs", "Atlas"], {}, [], keep_unmapped=True) == {
        "unrelated",
        "atlas/higgs",
    }
    assert map_groups([], group_map, ["CO:"], keep_unmapped=True) == set()
    # a mapped name is a path too, and several claims may map to one group
    assert map_groups(["x", "y"], {"x": "atlas/higgs", "y": "atlas/higgs"}) == {"atlas/higgs"}


# --- redirects -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "base", "kept"),
    [
        ("/hub/home", "/", True),
        ("/user/alice/lab?x=1", "/", True),
        ("/af/hub/home", "/af/", True),
        ("/other/hub/home", "/af/", False),
        ("/af", "/af/", False),
        ("//evil.example", "/", False),
        ("/\\evil.example", "/", False),
        ("https://evil.example/hub/", "/", False),
        ("hub/home", "/", False),
        ("/\t/evil.example", "/", False),
        ("/af/../evil", "/af/", False),
        ("/af/..%2F..%2F%2Fevil.example", "/af/", False),
        ("/af/%2e%2e/evil", "/af/", False),
        ("/af/./hub/home", "/af/", False),
        ("/af/hub/..", "/af/", False),
        ("/af/hub/..x/y.z", "/af/", True),
        ("", "/", False),
        (None, "/", False),
    ],
)
def test_same_site_path(url, base, kept):
    result = _same_site_path(url, base)
    if kept:
        assert result == url
    else:
        assert result is None


# --- the authenticator ---------------------------------------------------------------


def make(**kwargs):
    kwargs.setdefault("client_id", "cilogon:/client_id/1")
    kwargs.setdefault("client_secret", "s3cret")
    kwargs.setdefault("identity_providers", POLICY)
    # None: leave the trait unset (its default, from the environment or a file)
    return AfhubCILogonAuthenticator(**{k: v for k, v in kwargs.items() if v is not None})


def test_defaults():
    auth = make()
    assert {"openid", "email", "profile", "org.cilogon.userinfo"} <= set(auth.scope)
    assert auth.allow_all is False
    assert auth.manage_groups is True
    assert auth.group_claim == "isMemberOf"
    expected = build_idps(parse_identity_providers(POLICY))
    for entry in expected.values():
        # oauthenticator's idps validator adds (lowercased) allowed_domains to every entry
        entry.setdefault("allowed_domains", [])
    assert auth.idps == expected


def test_every_afhub_trait_is_documented_config():
    own = {
        "identity_providers",
        "allowed_email_domains",
        "group_claim",
        "group_map",
        "group_prefixes",
        "keep_unmapped_groups",
        "client_secret_file",
    }
    traits = AfhubCILogonAuthenticator.class_traits(config=True)
    for name in own:
        assert name in traits
        assert len(traits[name].help) > 40, name


def test_merge_prone_config_refuses_to_start():
    with pytest.raises(PolicyError, match="more than one IdP has no prefix"):
        make(identity_providers={A: {}, B: {}})


@pytest.mark.parametrize("trait", ["idps", "allowed_idps"])
def test_idps_cannot_be_set_directly(trait):
    with pytest.raises(PolicyError, match="not idps"):
        make(**{trait: {A: {"username_derivation": {"username_claim": "eppn"}}}})


def test_username_map_refused():
    with pytest.raises(PolicyError, match="username_map"):
        make(username_map={"b:alice": "alice"})


@pytest.mark.parametrize("name", ["bad name", "CO:x", "Atlas", "/atlas", "atlas//higgs"])
def test_bad_group_names_refused(name):
    with pytest.raises(PolicyError, match="group_map"):
        make(group_map={"CO:x": name})
    with pytest.raises(PolicyError, match="admin_groups"):
        make(admin_groups={name})


def test_client_secret_from_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "from-env")
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    auth = AfhubCILogonAuthenticator(
        client_id="id", client_secret_file=str(secret), identity_providers=POLICY
    )
    assert auth.client_secret == "from-file"


def test_client_secret_from_env(monkeypatch):
    monkeypatch.setenv("OAUTH_CLIENT_ID", "env-id")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "from-env")
    auth = AfhubCILogonAuthenticator(identity_providers=POLICY)
    assert (auth.client_id, auth.client_secret) == ("env-id", "from-env")


def test_client_secret_file_problems(tmp_path, monkeypatch):
    for var in ("OAUTH_CLIENT_SECRET", "CILOGON_CLIENT_SECRET", "CILOGON_CLIENT_ID"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="cannot read client_secret_file"):
        make(client_secret=None, client_secret_file=str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        make(client_secret=None, client_secret_file=str(empty))
    with pytest.raises(ValueError, match="not both"):
        make(client_secret="x", client_secret_file=str(empty))
    with pytest.raises(ValueError, match="no client secret"):
        make(client_secret=None)
    monkeypatch.delenv("OAUTH_CLIENT_ID", raising=False)
    with pytest.raises(ValueError, match="no client id"):
        make(client_id=None)


def _model(auth, user_info):
    return {"name": "x", "admin": None, "auth_state": {auth.user_auth_state_key: user_info}}


async def _allowed(auth, user_info):
    name = auth.user_info_to_username(user_info)
    model = _model(auth, user_info)
    model["groups"] = sorted(await auth.get_user_groups(model["auth_state"]))
    return await auth.check_allowed(name, model)


def run(coro):
    return asyncio.run(coro)


def test_check_allowed():
    auth = make(allowed_users={"github:friend"})
    a_user = {"idp": A, "eppn": "alice@a.edu", "email": "alice@a.edu"}
    assert run(_allowed(auth, a_user)) is True
    # listed IdP, email outside its domains, not otherwise allowed
    assert run(_allowed(auth, {**a_user, "email": "alice@gmail.com"})) is False
    assert run(_allowed(auth, {**a_user, "email": None})) is False
    # IdP with allow_all
    assert run(_allowed(auth, {"idp": B, "eppn": "bob@b.edu"})) is True
    # IdP with neither: only JupyterHub's own lists admit
    gh = {"idp": G, "preferred_username": "stranger", "email": "s@a.edu"}
    assert run(_allowed(auth, gh)) is False
    assert run(_allowed(auth, {**gh, "preferred_username": "friend"})) is True


def test_check_allowed_without_login_model_refuses():
    assert run(make(allowed_email_domains=["a.edu"]).check_allowed("alice", None)) is False


def test_unlisted_idp_refused_even_with_allowed_email():
    auth = make(allowed_email_domains=["a.edu"])
    info = {"idp": "https://idp.evil.example/idp", "eppn": "alice@a.edu", "email": "alice@a.edu"}
    with pytest.raises(web.HTTPError) as err:
        auth.user_info_to_username(info)
    assert err.value.status_code == 403
    with pytest.raises(web.HTTPError) as err:
        run(auth.check_allowed("alice", _model(auth, info)))
    assert err.value.status_code == 403


@pytest.mark.parametrize("idp", [None, "", [A], {"id": A}])
def test_missing_or_odd_idp_claim_refused(idp):
    info = {"eppn": "alice@a.edu"} if idp is None else {"idp": idp, "eppn": "alice@a.edu"}
    with pytest.raises(web.HTTPError) as err:
        make().user_info_to_username(info)
    assert err.value.status_code == 403


def test_bad_username_is_403():
    with pytest.raises(web.HTTPError) as err:
        make().user_info_to_username({"idp": A, "eppn": "alice@b.edu"})
    assert err.value.status_code == 403
    assert "not in its own domain" in err.value.log_message


def test_groups_and_admin_groups():
    auth = make(
        group_map={"CO:COU:afhub-admins:members:active": "af-admins"},
        group_prefixes=["CO:COU:afhub-"],
        admin_groups={"af-admins"},
    )
    info = {
        "idp": A,
        "eppn": "alice@a.edu",
        "email": "alice@a.edu",
        "isMemberOf": "CO:COU:afhub-admins:members:active,CO:COU:afhub-physics,other",
    }
    model = _model(auth, info)
    model = run(auth._apply_managed_groups(model))
    assert model["groups"] == ["af-admins", "physics"]
    assert model["admin"] is True
    info["isMemberOf"] = ["CO:COU:afhub-physics"]
    model = run(auth._apply_managed_groups(_model(auth, info)))
    assert model["groups"] == ["physics"]
    assert model["admin"] is False


def test_documented_example_config_is_valid(tmp_path):
    """The complete example in docs/authentication.md starts an authenticator."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "authentication.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```yaml\n")[1:]]
    example = next(yaml.safe_load(b) for b in blocks if "identity_providers" in b)
    settings = example["AfhubCILogonAuthenticator"]
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n")
    settings["client_secret_file"] = str(secret)
    auth = AfhubCILogonAuthenticator(config=Config(example))
    assert auth.client_secret == "s3cret"
    home = "https://idp.uni.edu/idp/shibboleth"
    assert auth.user_info_to_username({"idp": home, "eppn": "Alice@uni.edu"}) == "alice"
    partner = "urn:mace:incommon:partner.org"
    name = auth.user_info_to_username({"idp": partner, "eppn": "alice@partner.org"})
    assert name == "partner:alice"
    groups = run(
        auth.get_user_groups(
            {"cilogon_user": {"isMemberOf": ["CO:COU:atlas-higgs:members:active", "x"]}}
        )
    )
    assert groups == {"atlas/higgs"}
