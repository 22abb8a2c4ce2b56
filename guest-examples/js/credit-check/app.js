// credit-check, in JavaScript: a sync weir plug-in (world `plugin`) for
// create/update of `opportunity`.
//
// Rejects an opportunity whose `amount` exceeds the `creditlimit` of its
// customer account (the `customer` column, a `ref:account`), read through
// `records.get`. Register it with `--grant account:read`. Amounts compare
// exactly: decimals are strings in weir:plugin@0.3.0, compared here as BigInt
// (digits, scale) pairs, never as floats. Within the limit but above 90 % of
// it, the operation succeeds with a note for the caller; the limit it checked
// is left in the shared variable `credit_limit`.
//
// The same behaviour and messages as the Rust example guest-examples/credit-check.

import { get as getRecord } from 'weir:plugin/records@0.3.0';
import { write } from 'weir:plugin/log@0.3.0';

// An exact decimal: `digits / 10^scale`, from weir's decimal text.
function parseDecimal(text) {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(text.trim());
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return undefined;
  const frac = m[3] ?? '';
  const digits = BigInt((m[2] || '0') + frac) * (m[1] === '-' ? -1n : 1n);
  return { digits, scale: frac.length, text };
}

function compare(a, b) {
  const scale = Math.max(a.scale, b.scale);
  const x = a.digits * 10n ** BigInt(scale - a.scale);
  const y = b.digits * 10n ** BigInt(scale - b.scale);
  return x < y ? -1 : x > y ? 1 : 0;
}

function times(d, n) {
  return { digits: d.digits * BigInt(n), scale: d.scale };
}

const ZERO = { digits: 0n, scale: 0, text: '0' };

function column(entity, name) {
  return entity.fields.find((f) => f.name === name)?.value;
}

// Column `name` as an exact decimal (integer or decimal columns).
function decimal(entity, name) {
  const v = column(entity, name);
  if (v?.tag === 'integer') return parseDecimal(String(v.val));
  if (v?.tag === 'decimal') return parseDecimal(v.val);
  return undefined;
}

// Column `name` as text (text, json, and a reference's id).
function text(entity, name) {
  const v = column(entity, name);
  if (v?.tag === 'text' || v?.tag === 'json') return v.val;
  if (v?.tag === 'reference') return v.val.id;
  return undefined;
}

// Like Rust's `{e:?}` of a `RecordError`: `RecordError::NotFound("...")`.
function recordError(e) {
  const err = e?.payload ?? e;
  if (err && typeof err.tag === 'string') {
    const kind = err.tag.replace(/(^|-)(\w)/g, (_, __, c) => c.toUpperCase());
    return `RecordError::${kind}(${JSON.stringify(err.val)})`;
  }
  return String(e);
}

// A `plugin-error`: thrown from `execute`, it becomes `err(...)` of its result.
const rejected = (val) => ({ tag: 'rejected', val });
const failed = (val) => ({ tag: 'failed', val });

export const handler = {
  execute(ctx) {
    // On update the target holds only the changed fields: fall back to the pre-image.
    const has = (name) =>
      column(ctx.target, name) !== undefined
        ? ctx.target
        : ctx.preImage && column(ctx.preImage, name) !== undefined
          ? ctx.preImage
          : undefined;
    const e1 = has('amount');
    const amount = e1 && decimal(e1, 'amount');
    if (!amount) return { changes: [], notes: [], variables: [] };
    const e2 = has('customer');
    const customer = e2 && text(e2, 'customer');
    if (customer === undefined) throw rejected('an opportunity needs a customer account');
    let account;
    try {
      account = getRecord('account', customer);
    } catch (e) {
      throw failed(`cannot read account ${customer}: ${recordError(e)}`);
    }
    const limit = decimal(account, 'creditlimit') ?? ZERO;
    if (compare(amount, limit) > 0) {
      const name = text(account, 'name') ?? customer;
      throw rejected(`amount ${amount.text} exceeds the credit limit ${limit.text} of account ${name}`);
    }
    write('info', `amount ${amount.text} is within the credit limit ${limit.text}`);
    const notes = [];
    if (compare(times(amount, 10), times(limit, 9)) > 0) {
      notes.push(`amount ${amount.text} uses more than 90% of the credit limit ${limit.text}`);
    }
    return { changes: [], notes, variables: [{ name: 'credit_limit', value: JSON.stringify(limit.text) }] };
  },
};
