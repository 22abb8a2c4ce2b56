"""credit-check, in Python: a sync weir plug-in (world `plugin`) for create/update of `opportunity`.

Rejects an opportunity whose `amount` exceeds the `creditlimit` of its customer
account (the `customer` column, a `ref:account`), read through `records.get`.
Register it with `--grant account:read`. Amounts compare exactly (decimals
are strings in weir:plugin@0.3.0; Python's `decimal.Decimal` parses them).
Within the limit but above 90 % of it, the operation succeeds with a note for
the caller; the limit it checked is left in the shared variable `credit_limit`.

The same behaviour and messages as the Rust example guest-examples/credit-check.
"""

import json
from decimal import Decimal, InvalidOperation
from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.handler import Outcome, PluginError_Failed, PluginError_Rejected
from wit_world.imports import log, records
from wit_world.imports.types import (
    Context,
    Entity,
    Value,
    Value_Decimal,
    Value_Integer,
    Value_Json,
    Value_Reference,
    Value_Text,
    Variable,
)


def get(entity: Entity, name: str) -> Optional[Value]:
    for f in entity.fields:
        if f.name == name:
            return f.value
    return None


def decimal(entity: Entity, name: str) -> Optional[Decimal]:
    """Column `name` as an exact decimal (integer or decimal columns)."""
    v = get(entity, name)
    try:
        if isinstance(v, Value_Integer):
            return Decimal(v.value)
        if isinstance(v, Value_Decimal):
            return Decimal(v.value)
    except InvalidOperation:
        pass
    return None


def text(entity: Entity, name: str) -> Optional[str]:
    """Column `name` as text (text, json, and a reference's id)."""
    v = get(entity, name)
    if isinstance(v, (Value_Text, Value_Json)):
        return v.value
    if isinstance(v, Value_Reference):
        return v.value.id
    return None


def record_error(e) -> str:
    """Like Rust's `{e:?}` of a `RecordError`: `RecordError::NotFound("...")`."""
    kind = type(e).__name__.replace("_", "::", 1)
    return f"{kind}({json.dumps(e.value)})"


class Handler(exports.Handler):
    def execute(self, ctx: Context) -> Outcome:
        # On update the target holds only the changed fields: fall back to the pre-image.
        def column(name: str) -> Optional[Entity]:
            if get(ctx.target, name) is not None:
                return ctx.target
            pre = ctx.pre_image
            if pre is not None and get(pre, name) is not None:
                return pre
            return None

        e = column("amount")
        amount = decimal(e, "amount") if e is not None else None
        if amount is None:
            return Outcome(changes=[], notes=[], variables=[])
        e = column("customer")
        customer = text(e, "customer") if e is not None else None
        if customer is None:
            raise Err(PluginError_Rejected("an opportunity needs a customer account"))
        try:
            account = records.get("account", customer)
        except Err as err:
            raise Err(PluginError_Failed(f"cannot read account {customer}: {record_error(err.value)}"))
        limit = decimal(account, "creditlimit") or Decimal(0)
        if amount > limit:
            name = text(account, "name") or customer
            raise Err(PluginError_Rejected(
                f"amount {amount} exceeds the credit limit {limit} of account {name}"))
        log.write(log.Level.INFO, f"amount {amount} is within the credit limit {limit}")
        notes = []
        if amount * 10 > limit * 9:
            notes.append(f"amount {amount} uses more than 90% of the credit limit {limit}")
        variables = [Variable(name="credit_limit", value=json.dumps(str(limit)))]
        return Outcome(changes=[], notes=notes, variables=variables)
