from typing import Annotated, Literal

import pytest
from pydantic import StringConstraints

from bot.runtime.actions import ActionArgumentError, Arg, spec_of
from bot.runtime.actions import declare as action
from bot.runtime.policy import Risk

Version = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]
Env = Literal["staging", "production"]


class Plugin:
    @action(risk=Risk.CHANGE, target="env", timeout=60)
    def deploy(self, ctx, app: str, version: Version, env: Annotated[Env, Arg(after="to")]):
        """Deploy an application version to an environment.

        More text that is not the summary."""

    @action("service.restart", risk=Risk.CHANGE, target="host")
    def restart(self, ctx, service: str, host: Annotated[str, Arg(after="on")], count: int = 1):
        """Restart a service."""


DEPLOY = spec_of(Plugin.deploy)
RESTART = spec_of(Plugin().restart)


def test_spec_reads_the_signature():
    assert DEPLOY.name == "deploy" and DEPLOY.risk is Risk.CHANGE and DEPLOY.timeout == 60
    assert [p.name for p in DEPLOY.params] == ["app", "version", "env"]
    assert DEPLOY.summary == "Deploy an application version to an environment."
    assert DEPLOY.usage() == "!deploy <app> <version> to <env>"
    assert RESTART.usage("?") == "?service restart <service> on <host> [<count>]"


def test_positional_word_and_keyword_binding():
    expected = {"app": "api", "version": "1.4.2", "env": "staging"}
    assert DEPLOY.parse("api 1.4.2 to staging") == expected
    assert DEPLOY.parse("to staging api 1.4.2") == expected
    assert DEPLOY.parse("app=api env=staging version=1.4.2") == expected
    assert RESTART.parse("nginx on web-1 count=2") == {
        "service": "nginx",
        "host": "web-1",
        "count": 2,
    }
    assert RESTART.parse("nginx on web-1")["count"] == 1


def test_introduced_parameters_also_bind_in_the_signatures_order():
    """As the docs say: `!deploy api 1.4.2 staging` is `!deploy api 1.4.2 to staging`."""
    assert DEPLOY.parse("api 1.4.2 staging") == {"app": "api", "version": "1.4.2", "env": "staging"}
    assert RESTART.parse("nginx web-1 2") == {"service": "nginx", "host": "web-1", "count": 2}
    assert RESTART.parse("nginx 3 on web-1") == {"service": "nginx", "host": "web-1", "count": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api latest to staging", "version: must match ^"),
        ("api 1.4.2 to moon", "env: must be 'staging' or 'production' (got 'moon')"),
        ("api 1.4.2", "missing env"),
        ("api 1.4.2 to staging extra", "unexpected argument 'extra'"),
        ("api 'unbalanced to staging", "cannot read the arguments"),
        ("api 1.4.2 to staging env=production", "env given twice"),
        ("api;rm -rf / 1.4.2 to staging", "unexpected argument"),
    ],
)
def test_bad_arguments_are_refused_with_the_parameter_named(text, message):
    with pytest.raises(ActionArgumentError) as err:
        DEPLOY.parse(text)
    assert message in str(err.value)


def test_shell_metacharacters_stay_inert_values():
    # Nothing is executed; a hostile value is just a string that fails or passes validation.
    values = RESTART.parse("'nginx; rm -rf /' on '$(id)'")
    assert values == {"service": "nginx; rm -rf /", "host": "$(id)", "count": 1}


def test_overlong_values_are_refused():
    with pytest.raises(ActionArgumentError, match="longer than 512"):
        RESTART.parse("x" * 600 + " on web-1")


def test_programmatic_validation_and_digest():
    values = DEPLOY.validate({"app": "api", "version": "1.4.2", "env": "production"})
    assert DEPLOY.target_of(values) == "production"
    same = DEPLOY.digest(dict(reversed(list(values.items()))))
    assert DEPLOY.digest(values) == same
    assert DEPLOY.digest({**values, "version": "1.4.3"}) != same
    with pytest.raises(ActionArgumentError, match="unknown parameter colour"):
        DEPLOY.validate({**values, "colour": "red"})


def test_declaration_mistakes_fail_at_import():
    with pytest.raises(TypeError, match="needs a type annotation"):

        @action()
        def untyped(self, ctx, thing):
            pass

    with pytest.raises(TypeError, match="target 'env' is not one of its parameters"):

        @action(target="env")
        def no_env(self, ctx, thing: str):
            pass


def test_keyword_parameters_collect_name_value_pairs():
    class Recipes:
        @action("run", risk=Risk.CHANGE)
        def run(
            self,
            ctx,
            recipe: str,
            selector: Annotated[str, Arg(after="on")],
            params: Annotated[dict[str, str], Arg(keywords=True)] = {},  # noqa: B006
        ):
            """Run a recipe."""

    spec = spec_of(Recipes.run)
    assert spec.usage() == "!run <recipe> on <selector> [name=value ...]"
    assert spec.parse("tail-log on web1 lines=50 service=api") == {
        "recipe": "tail-log",
        "selector": "web1",
        "params": {"lines": "50", "service": "api"},
    }
    assert spec.parse("disk-usage on web1")["params"] == {}
    with pytest.raises(ActionArgumentError, match="lines given twice"):
        spec.parse("tail-log on web1 lines=1 lines=2")
    with pytest.raises(ActionArgumentError, match="longer than 512"):
        spec.parse("tail-log on web1 lines=" + "9" * 600)
