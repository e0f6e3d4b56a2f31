"""The inventory: loading, validation messages, targets, and rendered commands."""

import copy
import getpass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.inventory import (
    AmbiguousTarget,
    InvalidParameter,
    Inventory,
    InventoryError,
    NotAllowed,
    UnknownTarget,
)
from bot.yamlconfig import format_key

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inventory.yaml"
RAW = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return Inventory.load(EXAMPLE)


def modified(change) -> dict:
    raw = copy.deepcopy(RAW)
    change(raw)
    return raw


def stg_host(raw: dict, name: str = "stg-web1") -> dict:
    return raw["environments"]["staging"]["hosts"][name]


# --- loading --------------------------------------------------------------------------------------
def test_example_loads(inv):
    assert inv.environments() == ["staging", "production"]
    assert [h.name for h in inv.hosts("staging")] == [
        "stg-web1",
        "stg-web2",
        "stg-worker1",
        "stg-db1",
    ]
    assert len(inv.hosts()) == 10
    assert sorted(inv.recipes) == ["api-rollback", "disk-usage", "tail-log"]
    assert list(inv.deploys) == ["api"]
    assert inv.source == str(EXAMPLE)


def test_hosts_take_defaults_unless_they_override(inv):
    web = inv.host("stg-web1")
    assert (web.address, web.port, web.user, web.sudo) == (
        "stg-web1.internal.example.com",
        22,
        "deploy",
        True,
    )
    assert web.service_manager == "systemctl"
    assert web.connect_timeout == timedelta(seconds=10)
    assert web.known_hosts == Path("~/.ssh/known_hosts").expanduser()
    db = inv.host("stg-db1")
    assert (db.port, db.sudo, db.services, db.groups) == (2222, False, ("postgresql",), ("db",))
    prod_db = inv.host("prod-db1")
    assert prod_db.user == "dba" and prod_db.known_hosts == Path("/etc/opsroom/known_hosts.db")


def test_relative_key_paths_are_relative_to_the_file(tmp_path):
    raw = {
        "defaults": {"key_file": "keys/bot", "known_hosts": "known_hosts"},
        "environments": {"lab": {"hosts": {"h1": {"address": "127.0.0.1"}}}},
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(raw))
    host = Inventory.load(path).host("h1")
    assert host.key_file == tmp_path / "keys" / "bot"
    assert host.known_hosts == tmp_path / "known_hosts"
    assert host.use_agent is True and host.sudo is False


def test_the_user_defaults_to_the_bots_own_user(tmp_path):
    """Like ssh: without a user, log in as the local user running the bot (never root)."""
    raw = {"environments": {"lab": {"hosts": {"h1": {"address": "127.0.0.1"}}}}}
    assert Inventory.from_mapping(raw).host("h1").user == getpass.getuser()
    raw["defaults"] = {"user": "deploy"}
    raw["environments"]["lab"]["hosts"]["h2"] = {"address": "127.0.0.2", "user": "dba"}
    inventory = Inventory.from_mapping(raw)
    assert [h.user for h in inventory.hosts()] == ["deploy", "dba"]


def test_file_problems_name_the_file(tmp_path):
    with pytest.raises(InventoryError, match=r"missing.yaml: cannot read"):
        Inventory.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("environments: [unclosed\n")
    with pytest.raises(InventoryError, match=r"bad.yaml: not valid YAML"):
        Inventory.load(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(InventoryError, match=r"empty.yaml: environments: required key is missing"):
        Inventory.load(empty)


def test_duplicate_keys_are_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "environments:\n"
        "  lab:\n"
        "    hosts:\n"
        "      h1: {address: 10.0.0.1}\n"
        "      h1: {address: 10.0.0.2}\n"
    )
    with pytest.raises(InventoryError) as err:
        Inventory.load(path)
    assert "dup.yaml: not valid YAML" in str(err.value)
    assert "duplicate key 'h1'" in str(err.value) and "line 5" in str(err.value)


BAD = [
    # (change, key, expectation)
    (
        lambda r: r["defaults"].update(prot=22),
        "defaults.prot",
        "unknown key (allowed: user, port, key_file, use_agent, known_hosts, service_manager,",
    ),
    (lambda r: r["defaults"].update(connect_timeout="soon"), "defaults.connect_timeout", "30s"),
    (lambda r: r["defaults"].update(connect_timeout=0), "defaults.connect_timeout", "than zero"),
    (
        lambda r: r["defaults"].update(service_manager="-x"),
        "defaults.service_manager",
        "expected a command name or path",
    ),
    (lambda r: r.pop("environments"), "environments", "required key is missing"),
    (lambda r: r.update(environments={}), "environments", "at least 1 item"),
    (
        lambda r: stg_host(r).update(port="x"),
        "environments.staging.hosts.stg-web1.port",
        "valid integer",
    ),
    (
        lambda r: stg_host(r).update(port=70000),
        "environments.staging.hosts.stg-web1.port",
        "less than or equal to 65535",
    ),
    (
        lambda r: stg_host(r).update(address="web 1; id"),
        "environments.staging.hosts.stg-web1.address",
        "expected a DNS name or an IP address (got 'web 1; id')",
    ),
    (
        lambda r: stg_host(r).update(user="root;id"),
        "environments.staging.hosts.stg-web1.user",
        "expected a user name",
    ),
    (
        lambda r: stg_host(r).update(services=["nginx", "nginx;reboot"]),
        "environments.staging.hosts.stg-web1.services.1",
        "expected a systemd unit name",
    ),
    (
        lambda r: stg_host(r).update(services=["nginx", "nginx"]),
        "environments.staging.hosts.stg-web1.services",
        "listed more than once: nginx",
    ),
    (
        lambda r: stg_host(r).update(colour="blue"),
        "environments.staging.hosts.stg-web1.colour",
        "unknown key (allowed: address,",
    ),
    (
        lambda r: r["environments"]["staging"]["hosts"].update({"web 9": {"address": "x"}}),
        "environments.staging.hosts.web 9",
        "expected 1-63 letters",
    ),
    (
        lambda r: r["environments"]["production"]["hosts"].update(
            {"stg-web1": {"address": "10.0.0.9"}}
        ),
        "environments.production.hosts.stg-web1",
        "host name already used in staging",
    ),
    (
        lambda r: stg_host(r).update(groups=["production"]),
        "environments.staging.hosts.stg-web1.groups",
        "'production' is an environment",
    ),
    (
        lambda r: stg_host(r).update(groups=["stg-web2"]),
        "environments.staging.hosts.stg-web1.groups",
        "'stg-web2' is a host name",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append(["tail", "{file}"]),
        "recipes.tail-log.steps.1.1",
        "{file} is not a declared parameter (declared: service, lines)",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append("tail -n 5 /var/log/syslog"),
        "recipes.tail-log.steps.1",
        "a step is a list of argv words",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append(["{lines}"]),
        "recipes.tail-log.steps.1",
        "the first word (the program) must be literal",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append(["x", "{lines}{service}"]),
        "recipes.tail-log.steps.1.1",
        "at most one {parameter} per word",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append(["x", "a}b"]),
        "recipes.tail-log.steps.1.1",
        "unbalanced brace",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append(["x", "{a b}"]),
        "recipes.tail-log.steps.1.1",
        "{a b} is not a parameter name",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append(["x", ""]),
        "recipes.tail-log.steps.1.1",
        "a word must not be empty",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["steps"].append(["x", "a\nb"]),
        "recipes.tail-log.steps.1.1",
        "control characters",
    ),
    (
        lambda r: r["recipes"]["tail-log"].update(steps=[]),
        "recipes.tail-log.steps",
        "at least 1 item",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["lines"].update(pattern="[0-9"),
        "recipes.tail-log.params.lines.pattern",
        "not a valid regular expression",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["lines"].update(default="all"),
        "recipes.tail-log.params.lines",
        "invalid default 'all': must match ^[0-9]{1,4}$",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["lines"].update(choices=["1"]),
        "recipes.tail-log.params.lines",
        "give exactly one of pattern or choices",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["lines"].update(required=True),
        "recipes.tail-log.params.lines",
        "a parameter with a default is not required",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["service"].update(required=False),
        "recipes.tail-log.params.service",
        "an optional parameter needs a default",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["service"].update(choices=[]),
        "recipes.tail-log.params.service",
        "choices must not be empty",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["service"].update(choices=["a b\n"]),
        "recipes.tail-log.params.service",
        "invalid choice 'a b\\n': must be printable ASCII",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"].update({"9x": {"pattern": "x"}}),
        "recipes.tail-log.params.9x",
        "expected a letter or '_'",
    ),
    (
        lambda r: r["recipes"]["tail-log"]["params"]["lines"].update(patern="x"),
        "recipes.tail-log.params.lines.patern",
        "unknown key (allowed: description, pattern, choices, required, default)",
    ),
    (
        lambda r: r["deploys"]["api"]["hosts"].update(production="webs"),
        "deploys.api.hosts.production",
        "no group, host or environment 'webs'; did you mean web?",
    ),
    (
        lambda r: r["deploys"]["api"]["hosts"].update(production="db-primary"),
        "deploys.api.hosts.production",
        "no group, host or environment 'db-primary'",
    ),
    (
        lambda r: r["deploys"]["api"]["hosts"].update(production="stg-web1"),
        "deploys.api.hosts.production",
        "'stg-web1' has no hosts in production",
    ),
    (
        lambda r: r["deploys"]["api"]["hosts"].update(production={"service": "redis"}),
        "deploys.api.hosts.production",
        "no host of production runs service 'redis'",
    ),
    (
        lambda r: r["deploys"]["api"]["hosts"].update(
            production={"service": "api", "group": "web"}
        ),
        "deploys.api.hosts.production",
        "give exactly one of group or service",
    ),
    (
        lambda r: r["deploys"]["api"]["hosts"].update(prodution="web"),
        "deploys.api.hosts.prodution",
        "no environment 'prodution'; did you mean production?",
    ),
    (
        lambda r: r["deploys"]["api"].update(batch_size=0),
        "deploys.api.batch_size",
        "greater than or equal to 1",
    ),
    (
        lambda r: (
            r["deploys"]["api"]["params"].update(version={"choices": ["1"]})
            or r["deploys"]["api"].update(params={"release": {"pattern": "x"}})
        ),
        "deploys.api.params",
        "must declare the parameter version",
    ),
    (
        lambda r: r["deploys"]["api"]["steps"].append(["sleep", "{seconds}"]),
        "deploys.api.steps.3.1",
        "{seconds} is not a declared parameter (declared: version)",
    ),
    (
        lambda r: r["deploys"]["api"].pop("health_check"),
        "deploys.api.health_check",
        "required key is missing",
    ),
    (
        lambda r: r["deploys"]["api"]["health_check"].update(command=["curl", "{url}"]),
        "deploys.api.health_check.command.1",
        "{url} is not a declared parameter",
    ),
    (
        lambda r: r["deploys"]["api"]["health_check"].update(attempts=0),
        "deploys.api.health_check.attempts",
        "greater than or equal to 1",
    ),
    (
        lambda r: r["deploys"]["api"].update(rollback="api-rolback"),
        "deploys.api.rollback.recipe",
        "no recipe 'api-rolback'; did you mean api-rollback?",
    ),
    (
        lambda r: r["deploys"]["api"].update(rollback="tail-log"),
        "deploys.api.rollback.recipe",
        "recipe tail-log needs service, which deploy api does not declare",
    ),
    (
        lambda r: r["deploys"]["api"].update(rollback=[["undo", "{previous}"]]),
        "deploys.api.rollback.steps.0.1",
        "{previous} is not a declared parameter",
    ),
    (
        lambda r: r["deploys"]["api"].update(rollback={"recipe": "api-rollback", "steps": [["x"]]}),
        "deploys.api.rollback",
        "give exactly one of recipe or steps",
    ),
]


@pytest.mark.parametrize(("change", "key", "expected"), BAD, ids=[key for _, key, _ in BAD])
def test_every_problem_names_file_key_and_expectation(change, key, expected):
    with pytest.raises(InventoryError) as err:
        Inventory.from_mapping(modified(change), "inv.yaml")
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"inv.yaml: {key}: ") and expected in line for line in lines), lines


def test_all_problems_are_reported_at_once():
    def two_mistakes(raw):
        stg_host(raw).update(port="x")
        raw["recipes"]["disk-usage"].update(timeout="later")

    with pytest.raises(InventoryError) as err:
        Inventory.from_mapping(modified(two_mistakes), "inv.yaml")
    assert len(str(err.value).splitlines()) == 2


def test_format_key():
    assert format_key(("recipes", "x", "steps", 0, 2)) == "recipes.x.steps.0.2"
    assert format_key(("environments", "bad name", "[key]")) == "environments.bad name"
    assert format_key(()) == "(top level)"


# --- targets --------------------------------------------------------------------------------------
def names(hosts) -> list[str]:
    return [host.name for host in hosts]


def test_resolve_hosts_groups_and_environments(inv):
    assert names(inv.resolve("prod-web3")) == ["prod-web3"]
    assert names(inv.resolve("web", "staging")) == ["stg-web1", "stg-web2"]
    assert names(inv.resolve("db", "production")) == ["prod-db1"]
    assert names(inv.resolve("staging")) == ["stg-web1", "stg-web2", "stg-worker1", "stg-db1"]
    assert names(inv.resolve("staging", "staging")) == names(inv.hosts("staging"))
    assert names(inv.resolve("prod-web1", "production")) == ["prod-web1"]


def test_a_group_in_several_environments_needs_one(inv):
    with pytest.raises(AmbiguousTarget) as err:
        inv.resolve("web")
    assert str(err.value) == "web has hosts in staging and production; name the environment"
    assert err.value.environments == ("staging", "production")


def test_unknown_targets_suggest_close_names(inv):
    with pytest.raises(UnknownTarget) as err:
        inv.resolve("prod-web5")
    assert str(err.value).startswith("unknown host or group 'prod-web5'; did you mean prod-web")
    assert str(err.value).endswith("did you mean prod-web4, prod-web3 or prod-web2?")
    assert err.value.suggestions == ("prod-web4", "prod-web3", "prod-web2")
    with pytest.raises(UnknownTarget, match=r"'wbe' in staging; did you mean web\?"):
        inv.resolve("wbe", "staging")
    with pytest.raises(UnknownTarget, match=r"unknown host or group 'zzz' \(known: web, workers"):
        inv.resolve("zzz")
    with pytest.raises(UnknownTarget, match=r"^unknown environment 'prod'"):
        inv.resolve("web", "prod")
    with pytest.raises(UnknownTarget, match=r"'stagign'; did you mean staging\?"):
        inv.hosts("stagign")
    with pytest.raises(UnknownTarget, match=r"^unknown host 'prod-wbe1'; did you mean prod-web1"):
        inv.host("prod-wbe1")


def test_targets_stay_in_the_environment_asked_for(inv):
    with pytest.raises(UnknownTarget, match=r"^host prod-web1 is in production, not staging$"):
        inv.resolve("prod-web1", "staging")
    with pytest.raises(
        UnknownTarget, match=r"^production is an environment, not a group of staging"
    ):
        inv.resolve("production", "staging")
    raw = copy.deepcopy(RAW)
    raw["environments"]["staging"]["hosts"]["stg-web1"]["groups"] = ["canary"]
    with pytest.raises(UnknownTarget, match=r"^group canary has no hosts in production$"):
        Inventory.from_mapping(raw).resolve("canary", "production")


def test_services(inv):
    assert inv.services("web", "staging") == {
        "stg-web1": ("nginx", "api"),
        "stg-web2": ("nginx", "api"),
    }
    assert inv.services("prod-db1") == {"prod-db1": ("postgresql",)}
    assert len(inv.services()) == 10
    assert list(inv.services(env="staging")) == names(inv.hosts("staging"))


# --- service commands ----------------------------------------------------------------------------
def test_service_command_with_sudo(inv):
    assert inv.service_command("prod-web1", "restart", "nginx") == [
        "sudo",
        "-n",
        "systemctl",
        "restart",
        "nginx",
    ]
    host = inv.host("stg-web2")
    assert inv.service_command(host, "status", "api") == [
        "sudo",
        "-n",
        "systemctl",
        "status",
        "api",
    ]


def test_service_command_without_sudo_and_own_manager():
    raw = {
        "defaults": {"service_manager": "/usr/local/bin/svc"},
        "environments": {
            "lab": {"hosts": {"h1": {"address": "::1", "services": ["app@1.service"]}}}
        },
    }
    inv = Inventory.from_mapping(raw)
    for action in ("status", "restart", "start", "stop"):
        assert inv.service_command("h1", action, "app@1.service") == [
            "/usr/local/bin/svc",
            action,
            "app@1.service",
        ]


def test_only_listed_services_of_that_host(inv):
    with pytest.raises(NotAllowed) as err:
        inv.service_command("prod-db1", "restart", "nginx")
    assert str(err.value) == "service 'nginx' is not managed on prod-db1 (its services: postgresql)"
    with pytest.raises(NotAllowed, match=r"\(its services: nginx, api\); did you mean nginx\?$"):
        inv.service_command("prod-web1", "stop", "ngnix")
    with pytest.raises(InvalidParameter) as err:
        inv.service_command("prod-web1", "reload", "nginx")
    assert str(err.value) == "invalid action 'reload': must be one of: status, restart, start, stop"


def test_a_forged_host_record_does_not_widen_the_allow_list(inv):
    forged = inv.host("prod-db1").__class__(
        **{**inv.host("prod-db1").__dict__, "services": ("sshd",), "sudo": False}
    )
    with pytest.raises(NotAllowed, match=r"not managed on prod-db1"):
        inv.service_command(forged, "stop", "sshd")


# --- recipes --------------------------------------------------------------------------------------
def test_render_recipe(inv):
    assert inv.render_recipe("disk-usage") == [["df", "-h", "--local"]]
    assert inv.render_recipe("tail-log", {"service": "api"}) == [
        ["journalctl", "--no-pager", "--lines", "100", "--unit=api"]
    ]
    assert inv.render_recipe("tail-log", {"service": "worker", "lines": "5"}) == [
        ["journalctl", "--no-pager", "--lines", "5", "--unit=worker"]
    ]


def test_recipe_parameter_errors(inv):
    with pytest.raises(InvalidParameter) as err:
        inv.render_recipe("tail-log", {"service": "api", "lines": "12345"})
    assert str(err.value) == "invalid lines '12345': must match ^[0-9]{1,4}$"
    assert (err.value.parameter, err.value.value) == ("lines", "12345")
    with pytest.raises(InvalidParameter) as err:
        inv.render_recipe("tail-log", {"lines": "5"})
    assert str(err.value) == (
        "missing service: recipe tail-log requires it (must be one of: nginx, api, worker)"
    )
    with pytest.raises(InvalidParameter) as err:
        inv.render_recipe("tail-log", {"service": "api", "count": "5"})
    assert str(err.value) == (
        "invalid parameter 'count': recipe tail-log has no such parameter "
        "(it takes: service, lines)"
    )
    with pytest.raises(InvalidParameter, match=r"it takes none"):
        inv.render_recipe("disk-usage", {"lines": "5"})
    with pytest.raises(
        NotAllowed, match=r"^no recipe named 'disk-usag'; did you mean disk-usage\?"
    ):
        inv.render_recipe("disk-usag")


def test_word_templates_prefix_suffix_and_escaped_braces():
    raw = copy.deepcopy(RAW)
    raw["recipes"]["find"] = {
        "params": {"days": {"pattern": "^[0-9]{1,3}$"}},
        "steps": [["find", "/tmp", "-mtime", "+{days}d", "-exec", "ls", "{{}}", ";"]],
    }
    assert Inventory.from_mapping(raw).render_recipe("find", {"days": "7"}) == [
        ["find", "/tmp", "-mtime", "+7d", "-exec", "ls", "{}", ";"]
    ]


def test_leading_dash_only_when_the_pattern_starts_with_one():
    raw = copy.deepcopy(RAW)
    raw["recipes"]["nice"] = {
        "params": {
            "level": {"pattern": "^-?[0-9]{1,2}$"},
            "flag": {"choices": ["-v", "-q"]},
            "word": {"pattern": "^[-a-z]+$"},
        },
        "steps": [["nice", "{level}", "{flag}", "{word}"]],
    }
    inv = Inventory.from_mapping(raw)
    assert inv.render_recipe("nice", {"level": "-5", "flag": "-q", "word": "a-b"}) == [
        ["nice", "-5", "-q", "a-b"]
    ]
    with pytest.raises(InvalidParameter, match=r"'-rf': must not start with '-'"):
        inv.render_recipe("nice", {"level": "5", "flag": "-q", "word": "-rf"})


# --- deploys --------------------------------------------------------------------------------------
def test_render_deploy_batches_and_steps(inv):
    plan = inv.render_deploy("api", "production", {"version": "1.4.2"})
    assert (plan.app, plan.environment, plan.params) == ("api", "production", {"version": "1.4.2"})
    assert [names(batch) for batch in plan.batches] == [
        ["prod-web1", "prod-web2"],
        ["prod-web3", "prod-web4"],
    ]
    assert plan.steps == [
        ["sudo", "-n", "/usr/local/bin/api-release", "fetch", "1.4.2"],
        ["sudo", "-n", "/usr/local/bin/api-release", "activate", "1.4.2"],
        ["sudo", "-n", "systemctl", "restart", "api"],
    ]
    assert plan.health_check.argv == [
        "curl",
        "--fail",
        "--silent",
        "--max-time",
        "5",
        "http://127.0.0.1:8080/health",
    ]
    assert (plan.health_check.attempts, plan.health_check.interval) == (5, timedelta(seconds=3))
    assert plan.health_check.timeout == timedelta(seconds=10)
    assert plan.rollback == [
        ["sudo", "-n", "/usr/local/bin/api-release", "activate-previous"],
        ["sudo", "-n", "systemctl", "restart", "api"],
    ]
    assert plan.timeout == timedelta(minutes=5)
    staging = inv.render_deploy("api", "staging", {"version": "1.4.3"})
    assert [names(batch) for batch in staging.batches] == [["stg-web1", "stg-web2"]]


@pytest.mark.parametrize(
    ("batch_size", "expected"),
    [(1, [1, 1, 1, 1]), (3, [3, 1]), (4, [4]), (10, [4])],
)
def test_batch_sizes(batch_size, expected):
    raw = copy.deepcopy(RAW)
    raw["deploys"]["api"]["batch_size"] = batch_size
    plan = Inventory.from_mapping(raw).render_deploy("api", "production", {"version": "2.0.0"})
    assert [len(batch) for batch in plan.batches] == expected
    assert [h.name for batch in plan.batches for h in batch] == [
        "prod-web1",
        "prod-web2",
        "prod-web3",
        "prod-web4",
    ]


def test_inline_rollback_uses_the_deploy_parameters():
    raw = copy.deepcopy(RAW)
    raw["deploys"]["api"]["rollback"] = [["/usr/local/bin/api-release", "remove", "{version}"]]
    raw["deploys"]["api"]["hosts"] = {"staging": "stg-web2"}
    plan = Inventory.from_mapping(raw).render_deploy("api", "staging", {"version": "1.0.0"})
    assert plan.rollback == [["/usr/local/bin/api-release", "remove", "1.0.0"]]
    assert [names(batch) for batch in plan.batches] == [["stg-web2"]]
    del raw["deploys"]["api"]["rollback"]
    assert (
        Inventory.from_mapping(raw).render_deploy("api", "staging", {"version": "1.0.0"}).rollback
        == []
    )


def test_deploy_refusals(inv):
    with pytest.raises(InvalidParameter) as err:
        inv.render_deploy("api", "production", {"version": "1.4"})
    assert str(err.value) == r"invalid version '1.4': must match ^[0-9]+\.[0-9]+\.[0-9]+$"
    with pytest.raises(InvalidParameter, match=r"^missing version: deploy api requires it"):
        inv.render_deploy("api", "production", {})
    with pytest.raises(NotAllowed, match=r"^no app named 'apy'; did you mean api\?"):
        inv.render_deploy("apy", "production", {"version": "1.4.2"})
    with pytest.raises(UnknownTarget, match=r"^unknown environment 'prodution'; did you mean"):
        inv.render_deploy("api", "prodution", {"version": "1.4.2"})
    raw = copy.deepcopy(RAW)
    raw["deploys"]["api"]["hosts"] = {"staging": "web"}
    with pytest.raises(
        NotAllowed, match=r"^api is not deployed to production \(it deploys to: staging\)$"
    ):
        Inventory.from_mapping(raw).render_deploy("api", "production", {"version": "1.4.2"})


# --- documentation -------------------------------------------------------------------------------
DOC = EXAMPLE.parents[1] / "docs" / "inventory.md"


def test_the_documented_example_is_the_example_file():
    text = DOC.read_text(encoding="utf-8")
    block = text.split("## Complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block == EXAMPLE.read_text(encoding="utf-8")


def test_the_documented_python_example_runs(capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLE.parents[1])
    text = DOC.read_text(encoding="utf-8")
    code = text.split("## Using it from Python", 1)[1].split("```python\n", 1)[1].split("```")[0]
    exec(compile(code, str(DOC), "exec"), {})
    assert capsys.readouterr().out.startswith("invalid service 'nginx; rm -rf /': must be a")


def test_an_environment_may_be_a_cluster_or_jenkins_only_but_not_empty(tmp_path):
    from bot.inventory import Inventory, InventoryError

    cluster_only = tmp_path / "cluster.yaml"
    cluster_only.write_text(
        "environments:\n  k8s-only:\n    kubernetes: {context: prod, namespaces: [web]}\n"
    )
    inventory = Inventory.load(cluster_only)
    assert inventory.environments() == ["k8s-only"]
    assert inventory.hosts("k8s-only") == []
    empty = tmp_path / "empty.yaml"
    empty.write_text("environments:\n  nothing: {description: typo}\n")
    with pytest.raises(
        InventoryError, match=r"environments\.nothing.*hosts, kubernetes or jenkins"
    ):
        Inventory.load(empty)
