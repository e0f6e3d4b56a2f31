"""The inventory: environments, hosts, services, and the only commands the bot may run on them.

Nothing here talks to a host or to chat. The inventory turns a request ("restart nginx on web in
staging", "run tail-log with lines=50", "deploy api 1.4.2 to production") into argv lists, and
refuses anything it does not allow *before* a connection is made:

- hosts, groups, environments, services, recipes and apps must be named in the inventory;
- every parameter value must match its declared pattern or choices, be printable ASCII, at most
  128 characters, and not start with ``-`` (so it cannot be smuggled in as an option);
- commands are lists of argv words written in the inventory; a parameter fills exactly one
  word, never a shell string, so a value stays one argument however it is quoted later.

The file format is documented in ``docs/inventory.md``; ``examples/inventory.yaml`` is complete.

The package has three modules: :mod:`~bot.inventory.validation` (value rules and errors),
:mod:`~bot.inventory.model` (the file as pydantic models, and the checks that span keys) and
:mod:`~bot.inventory.queries` (loading, and the questions the bot asks: targets and commands).

Errors: :class:`InventoryError` is a bad file (a :class:`bot.errors.ConfigurationError`: start-up
stops, the message names file, key and expectation). What the inventory does not allow is a
:class:`bot.errors.Refusal`: :class:`InvalidParameter` (a :class:`bot.errors.InvalidArgument`),
:class:`bot.errors.UnknownTarget`, :class:`AmbiguousTarget` and :class:`NotAllowed`; their
messages are written to be shown in chat as they are.
"""

from bot.errors import UnknownTarget
from bot.inventory.model import (
    Deploy,
    HealthCheck,
    InventoryDocument,
    Param,
    Recipe,
    Word,
)
from bot.inventory.queries import DeployPlan, HealthCheckPlan, Host, Inventory, RecipePlan
from bot.inventory.validation import (
    MAX_VALUE_LENGTH,
    SERVICE_ACTIONS,
    AmbiguousTarget,
    InvalidParameter,
    InventoryError,
    NotAllowed,
    ServiceAction,
    check_value,
)

__all__ = [
    "MAX_VALUE_LENGTH",
    "SERVICE_ACTIONS",
    "AmbiguousTarget",
    "Deploy",
    "DeployPlan",
    "HealthCheck",
    "HealthCheckPlan",
    "Host",
    "InvalidParameter",
    "Inventory",
    "InventoryDocument",
    "InventoryError",
    "NotAllowed",
    "Param",
    "Recipe",
    "RecipePlan",
    "ServiceAction",
    "UnknownTarget",
    "Word",
    "check_value",
]
