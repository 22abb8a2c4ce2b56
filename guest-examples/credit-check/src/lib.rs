//! credit-check: a sync plug-in for create/update of `opportunity`.
//!
//! Rejects an opportunity whose `amount` exceeds the `creditlimit` of its customer
//! account (the `customer` column, a `ref:account`), read through `records`.
//! Register it at pre-operation with `--grant account:read`. Amounts compare
//! exactly (decimals). Within the limit but above 90 % of it, the operation
//! succeeds with a note for the caller; the limit it checked is left in the
//! shared variable `credit_limit` for the steps after it.

use weir_guest::records;
use weir_guest::types::{Context, Entity};

weir_guest::bindings!("plugin");

use exports::weir::plugin::handler::{Guest, Outcome, PluginError};

struct CreditCheck;

impl Guest for CreditCheck {
    fn execute(ctx: Context) -> Result<Outcome, PluginError> {
        // On update the target holds only the changed fields: fall back to the pre-image.
        let column = |name: &str| -> Option<Entity> {
            if ctx.target.get(name).is_some() {
                Some(ctx.target.clone())
            } else {
                ctx.pre_image.clone().filter(|pre| pre.get(name).is_some())
            }
        };
        let Some(amount) = column("amount").and_then(|e| e.decimal("amount")) else {
            return Ok(Outcome { changes: vec![], notes: vec![], variables: vec![] });
        };
        let Some(customer) = column("customer").and_then(|e| e.text("customer").map(String::from)) else {
            return Err(PluginError::Rejected("an opportunity needs a customer account".into()));
        };
        let account = records::get("account", &customer)
            .map_err(|e| PluginError::Failed(format!("cannot read account {customer}: {e:?}")))?;
        let limit = account.decimal("creditlimit").unwrap_or_default();
        if amount > limit {
            let name = account.text("name").unwrap_or(&customer);
            return Err(PluginError::Rejected(format!(
                "amount {amount} exceeds the credit limit {limit} of account {name}"
            )));
        }
        weir_guest::info(&format!("amount {amount} is within the credit limit {limit}"));
        let mut notes = vec![];
        if amount * weir_guest::Decimal::new(10, 0) > limit * weir_guest::Decimal::new(9, 0) {
            notes.push(format!("amount {amount} uses more than 90% of the credit limit {limit}"));
        }
        let variables = vec![weir_guest::set_variable("credit_limit", &weir_guest::serde_json::json!(limit.to_string()))];
        Ok(Outcome { changes: vec![], notes, variables })
    }
}

export!(CreditCheck);
