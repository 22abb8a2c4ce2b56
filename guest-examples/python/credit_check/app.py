"""credit-check, in Python: a sync weir plug-in (world `plugin`) for create/update of `opportunity`.

Rejects an opportunity whose `amount` exceeds the `creditlimit` of its customer
account (the `customer` column, a `ref:account`), read through `records.get`.
Register it with `--grant account:read`. Amounts compare exactly (decimals
are strings in weir:plugin@0.3.0; the weir_guest helper, in
../../weir-guest-py, reads them as Python's `decimal.Decimal`).
Within the limit but above 90 % of it, the operation succeeds with a note for
the caller; the limit it checked is left in the shared variable `credit_limit`.

The same behaviour and messages as the Rust example guest-examples/credit-check.
"""

from decimal import Decimal
from typing import Optional

import weir_guest as weir
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import records
from wit_world.imports.types import Context, Entity


class Handler(exports.Handler):
    def execute(self, ctx: Context) -> weir.Outcome:
        # On update the target holds only the changed fields: fall back to the pre-image.
        def column(name: str) -> Optional[Entity]:
            for e in (ctx.target, ctx.pre_image):
                if weir.get(e, name) is not None:
                    return e
            return None

        amount = weir.decimal(column("amount"), "amount")
        if amount is None:
            return weir.Outcome()
        customer = weir.text(column("customer"), "customer")
        if customer is None:
            weir.rejected("an opportunity needs a customer account")
        try:
            account = records.get("account", customer)
        except Err as err:
            weir.failed(f"cannot read account {customer}: {weir.record_error_text(err)}")
        limit = weir.decimal(account, "creditlimit") or Decimal(0)
        if amount > limit:
            name = weir.text(account, "name") or customer
            weir.rejected(f"amount {amount} exceeds the credit limit {limit} of account {name}")
        weir.info(f"amount {amount} is within the credit limit {limit}")
        out = weir.Outcome()
        if amount * 10 > limit * 9:
            out.note(f"amount {amount} uses more than 90% of the credit limit {limit}")
        return out.variable("credit_limit", limit)
