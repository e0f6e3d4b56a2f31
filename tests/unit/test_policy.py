import pytest

from bot.runtime.policy import Policy, PolicyError, Principal, Risk

IDS = {"@alice": "a" * 26, "@bob": "b" * 26, "@carol": "c" * 26, "@dave": "d" * 26}

DOC = {
    "readers": ["*"],
    "protected_environments": ["production"],
    "roles": {
        "deployer": {
            "members": ["@alice", "group:sre"],
            "grants": [
                {"action": "deploy", "environments": ["staging"]},
                {
                    "action": "service.*",
                    "environments": "*",
                    "where": {"service": ["nginx", "api-*"]},
                },
            ],
        },
        "prod-deployer": {
            "members": ["@carol"],
            "grants": [{"action": "deploy", "environments": ["production"]}],
        },
        "approver": {"members": ["@dave"], "approves": ["deploy", "service.*"]},
    },
}


def who(name, groups=()):
    return Principal(IDS[name], name.lstrip("@"), frozenset(groups))


@pytest.fixture
def policy():
    return Policy.from_mapping(DOC, IDS.get)


def test_grants_by_environment(policy):
    assert policy.authorize(who("@alice"), "deploy", Risk.CHANGE, "staging").allowed
    denied = policy.authorize(who("@alice"), "deploy", Risk.CHANGE, "production")
    assert not denied.allowed
    assert denied.reason == "deploy in production needs role prod-deployer (you have: deployer)"
    assert denied.missing_roles == ("prod-deployer",)
    assert policy.authorize(who("@carol"), "deploy", Risk.CHANGE, "production").allowed


def test_change_is_denied_by_default(policy):
    decision = policy.authorize(who("@bob"), "deploy", Risk.CHANGE, "staging")
    assert not decision.allowed
    assert "needs role deployer" in decision.reason and "you have: no role" in decision.reason
    unknown = policy.authorize(who("@carol"), "drop-database", Risk.DANGEROUS, "staging")
    assert unknown.reason.startswith("drop-database in staging is not granted to any role")


def test_argument_values_restrict_grants(policy):
    ok = policy.authorize(
        who("@alice"), "service.restart", Risk.CHANGE, "staging", {"service": "api-web"}
    )
    assert ok.allowed
    no = policy.authorize(
        who("@alice"), "service.restart", Risk.CHANGE, "staging", {"service": "postgres"}
    )
    assert not no.allowed


def test_groups_grant_roles(policy):
    assert policy.roles_of(who("@bob", {"sre"})) == ["deployer"]
    assert policy.authorize(who("@bob", {"sre"}), "deploy", Risk.CHANGE, "staging").allowed


def test_reads_open_to_readers():
    restricted = Policy.from_mapping({**DOC, "readers": ["role:deployer", "@bob"]}, IDS.get)
    assert restricted.authorize(who("@alice"), "hosts", Risk.READ).allowed
    assert restricted.authorize(who("@bob"), "hosts", Risk.READ).allowed
    assert not restricted.authorize(who("@dave"), "hosts", Risk.READ).allowed


def test_approvers(policy):
    assert policy.can_approve(who("@dave"), "deploy")
    assert not policy.can_approve(who("@alice"), "deploy")
    assert policy.approvers("service.restart") == ["approver"]
    assert policy.is_protected("production") and not policy.is_protected("staging")


def test_unknown_usernames_are_reported_not_granted():
    policy = Policy.from_mapping({"roles": {"x": {"members": ["@ghost"], "grants": []}}}, IDS.get)
    assert policy.unresolved == ["@ghost (role x)"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"roles": {"r": {"members": ["alice"]}}}, "roles.r.members"),
        ({"roles": {"r": {"grants": [{"environments": ["x"]}]}}}, "roles.r.grants.0.action"),
        ({"roles": {"r": {"grnts": []}}}, "roles.r.grnts"),
        ({"approvals": {"expire_after": "soon"}}, "approvals.expire_after"),
        ({"readers": ["everyone"]}, "readers"),
    ],
)
def test_bad_policy_names_the_key(doc, expected):
    with pytest.raises(PolicyError) as err:
        Policy.from_mapping(doc, source="policy.yaml")
    assert f"policy.yaml: {expected}" in str(err.value)


def test_load_reports_file_problems(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        Policy.load(bad)
