//! credit-check: a sync plug-in for create/update of `opportunity`.
//!
//! Rejects an opportunity whose `amount` exceeds the `creditlimit` of its customer
//! account (the `customer` column, a `ref:account`), read through `records`.
//! Register it at pre-operation with `--grant account:read`. Amounts compare
//! exactly (decimals). Within the limit but above 90 % of it, the operation
//! succeeds with a note for the caller; the limit it checked is left in the
//! shared variable `credit_limit` for the steps after it.

use weir_guest::{Context, Decimal, Entity, Outcome, Plugin, PluginError, records};

struct CreditCheck;

impl Plugin for CreditCheck {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        // On update the target holds only the changed fields: fall back to the pre-image.
        let column = |name: &str| -> Option<Entity> {
            if ctx.target.get(name).is_some() {
                Some(ctx.target.clone())
            } else {
                ctx.pre_image.clone().filter(|pre| pre.get(name).is_some())
            }
        };
        let Some(amount) = column("amount").and_then(|e| e.value::<Decimal>("amount")) else {
            return Ok(Outcome::default());
        };
        let Some(customer) = column("customer").and_then(|e| e.text("customer").map(String::from)) else {
            return Err(PluginError::Rejected("an opportunity needs a customer account".into()));
        };
        let account = records::get("account", &customer)
            .map_err(|e| PluginError::Failed(format!("cannot read account {customer}: {e:?}")))?;
        let limit: Decimal = account.value("creditlimit").unwrap_or_default();
        if amount > limit {
            let name = account.text("name").unwrap_or(&customer);
            return Err(PluginError::Rejected(format!(
                "amount {amount} exceeds the credit limit {limit} of account {name}"
            )));
        }
        weir_guest::info(&format!("amount {amount} is within the credit limit {limit}"));
        let mut outcome = Outcome::default().variable("credit_limit", &limit.to_string());
        if amount * Decimal::new(10, 0) > limit * Decimal::new(9, 0) {
            outcome = outcome.note(format!("amount {amount} uses more than 90% of the credit limit {limit}"));
        }
        Ok(outcome)
    }
}

weir_guest::plugin!(CreditCheck);
