// credit-check, in JavaScript: a sync weir plug-in (world `plugin`) for
// create/update of `opportunity`.
//
// Rejects an opportunity whose `amount` exceeds the `creditlimit` of its
// customer account (the `customer` column, a `ref:account`), read through
// `records.get`. Register it with `--grant account:read`. Amounts compare
// exactly: decimals are strings in weir:plugin@0.3.0, read here as big.js
// decimals by weir-guest (`./weir-guest.js`, the JavaScript helper, vendored
// from ../../weir-guest-js), never as floats. Within the limit but above 90 %
// of it, the operation succeeds with a note for the caller; the limit it
// checked is left in the shared variable `credit_limit`.
//
// The same behaviour and messages as the Rust example guest-examples/credit-check.

import { get as getRecord } from 'weir:plugin/records@0.3.0';
import { write } from 'weir:plugin/log@0.3.0';
import { Decimal, decimal, decimalText, failed, get, outcome, recordErrorText, rejected, text } from './weir-guest.js';

export const handler = {
  execute(ctx) {
    // On update the target holds only the changed fields: fall back to the pre-image.
    const has = (name) => (get(ctx.target, name) !== undefined ? ctx.target : get(ctx.preImage, name) !== undefined ? ctx.preImage : undefined);
    const e1 = has('amount');
    const amount = decimal(e1, 'amount');
    if (amount === null) return outcome();
    const customer = text(has('customer'), 'customer');
    if (customer === null) throw rejected('an opportunity needs a customer account');
    let account;
    try {
      account = getRecord('account', customer);
    } catch (e) {
      throw failed(`cannot read account ${customer}: ${recordErrorText(e)}`);
    }
    const limit = decimal(account, 'creditlimit') ?? Decimal(0);
    // The texts keep the scale they were given (`95.50`), as the Rust example prints them.
    const [amountText, limitText] = [decimalText(e1, 'amount'), decimalText(account, 'creditlimit') ?? '0'];
    if (amount.gt(limit)) {
      const name = text(account, 'name') ?? customer;
      throw rejected(`amount ${amountText} exceeds the credit limit ${limitText} of account ${name}`);
    }
    write('info', `amount ${amountText} is within the credit limit ${limitText}`);
    const result = outcome().variable('credit_limit', limitText);
    if (amount.times(10).gt(limit.times(9))) {
      result.note(`amount ${amountText} uses more than 90% of the credit limit ${limitText}`);
    }
    return result;
  },
};
