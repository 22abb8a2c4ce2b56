// weir-guest: helpers for weir plug-ins written in JavaScript, built as
// components of `weir:plugin@0.3.0` with componentize-js (StarlingMonkey) or
// componentize-qjs (QuickJS). What the Rust SDK gives Rust plug-ins: typed
// field access, exact decimals (big.js, never floats), fields from JavaScript
// values, outcomes, errors, JSON config, input, shared variables and workflow
// state, workflow steps and child jobs.
//
//     import { decimal, outcome, rejected } from './weir-guest.js';
//
//     export const handler = {
//       execute(ctx) {
//         const amount = decimal(ctx.target, 'amount'); // a Decimal, or null
//         if (amount?.gt(1000)) throw rejected(`amount ${amount} is over 1000`);
//         return outcome().note('checked');
//       },
//     };
//
// Written for both engines: an absent `option` is `undefined` under
// StarlingMonkey and `null` under QuickJS, and a 64-bit integer (`s64`, `u64`)
// arrives as a BigInt under StarlingMonkey and as a number under QuickJS; these
// helpers accept either and send numbers (QuickJS refuses a BigInt there).
//
// MIT OR Apache-2.0. See README.md in guest-examples/weir-guest-js of weir's
// repository; `dist/weir-guest.js` is this file with big.js inlined.

import Big from 'big.js';
import { write } from 'weir:plugin/log@0.3.0';
import { query as queryRecords } from 'weir:plugin/records@0.3.0';
import { start as startJob } from 'weir:plugin/jobs@0.3.0';

/** This helper's version: that of the contract it is written for. */
export const VERSION = '0.3.0';

// ---------------------------------------------------------------- decimals

/**
 * The exact decimal type: a big.js constructor of its own (so configuring it
 * changes no other copy of big.js). `Decimal('10.50')`, `Decimal(5)`,
 * `Decimal(12n)`; `a.plus(b)`, `minus`, `times` are exact; `div` rounds to
 * `Decimal.DP` (20) decimal places with `Decimal.RM` (half up). Compare with
 * `a.cmp(b)`, `eq`, `gt`, `gte`, `lt`, `lte`: never with `<`, `>` or `==`,
 * which compare text. It prints without an exponent (`String(d)`,
 * `${d}`) and without trailing zeros (`10.50` prints `10.5`: use
 * {@link decimalText} for the column's own text).
 */
export const Decimal = Big();
Decimal.NE = -1e6;
Decimal.PE = 1e6;

/**
 * Whether `v` is a decimal object (of {@link Decimal}, or of another copy of big.js).
 * @param {unknown} v
 * @returns {boolean}
 */
export function isDecimal(v) {
  return v instanceof Decimal || (v !== null && typeof v === 'object' && Array.isArray(v.c) && typeof v.e === 'number' && (v.s === 1 || v.s === -1));
}

/**
 * The decimal text weir keeps for `d`: no exponent, no trailing zeros after
 * the point, zero never negative (`Decimal('1e3')` → `'1000'`). Numbers and
 * BigInts are read as their text (`0.1` → `'0.1'`), as weir reads a float.
 * @param {Big | string | number | bigint} d
 * @returns {string}
 */
export function canonical(d) {
  const x = isDecimal(d) ? new Decimal(d) : toDecimal(d);
  if (x === null) throw new TypeError(`not a decimal: ${String(d)}`);
  const text = x.toFixed();
  return text === '-0' ? '0' : text;
}

/** @param {unknown} v @returns {Big | null} */
function toDecimal(v) {
  try {
    if (isDecimal(v)) return new Decimal(v);
    if (typeof v === 'bigint') return new Decimal(v.toString());
    if (typeof v === 'number') return Number.isFinite(v) ? new Decimal(String(v)) : null;
    if (typeof v === 'string') return new Decimal(v.trim().replace(/^\+/, ''));
  } catch {
    // Not decimal text.
  }
  return null;
}

// ---------------------------------------------------------------- reading fields

/**
 * The value of column `name` of `entity` as the bindings give it (`{ tag, val }`,
 * `{ tag: 'null' }` for a null column), or `undefined` when the record does
 * not carry the column (or `entity` is absent).
 * @param {{ fields: { name: string, value: { tag: string, val?: any } }[] } | null | undefined} entity
 * @param {string} name
 * @returns {{ tag: string, val?: any } | undefined}
 */
export function get(entity, name) {
  return entity?.fields?.find((f) => f.name === name)?.value;
}

/**
 * Column `name` as an exact {@link Decimal} (integer or decimal columns);
 * `null` when absent, null or of another type.
 * @param {object | null | undefined} entity
 * @param {string} name
 * @returns {Big | null}
 */
export function decimal(entity, name) {
  const v = get(entity, name);
  return v?.tag === 'integer' || v?.tag === 'decimal' ? toDecimal(v.val) : null;
}

/**
 * Column `name` as decimal text with the scale it has (`'95.50'`, for
 * messages; an integer column's digits); `null` when absent, null or of another type.
 * @param {object | null | undefined} entity
 * @param {string} name
 * @returns {string | null}
 */
export function decimalText(entity, name) {
  const v = get(entity, name);
  return v?.tag === 'integer' || v?.tag === 'decimal' ? String(v.val) : null;
}

/**
 * Column `name` of an integer column, as a number (a BigInt beyond 2^53,
 * which only StarlingMonkey sends exactly); `null` when absent, null or of another type.
 * @param {object | null | undefined} entity
 * @param {string} name
 * @returns {number | bigint | null}
 */
export function integer(entity, name) {
  const v = get(entity, name);
  return v?.tag === 'integer' ? int(v.val) : null;
}

/**
 * Column `name` as text: text and json columns, and a reference's id; `null`
 * when absent, null or of another type.
 * @param {object | null | undefined} entity
 * @param {string} name
 * @returns {string | null}
 */
export function text(entity, name) {
  const v = get(entity, name);
  if (v?.tag === 'text' || v?.tag === 'json') return v.val;
  if (v?.tag === 'reference') return v.val.id;
  return null;
}

/**
 * Column `name` as a boolean; `null` when absent, null or of another type.
 * @param {object | null | undefined} entity
 * @param {string} name
 * @returns {boolean | null}
 */
export function boolean(entity, name) {
  const v = get(entity, name);
  return v?.tag === 'boolean' ? v.val : null;
}

/**
 * Column `name` as a reference, `{ table, id }`; `null` when absent, null or
 * not a reference.
 * @param {object | null | undefined} entity
 * @param {string} name
 * @returns {{ table: string, id: string } | null}
 */
export function reference(entity, name) {
  const v = get(entity, name);
  return v?.tag === 'reference' ? { table: v.val.table, id: v.val.id } : null;
}

/**
 * Column `name` of a timestamp column (such as `created_at`) as a `Date`;
 * `null` when absent, null or of another type.
 * @param {object | null | undefined} entity
 * @param {string} name
 * @returns {Date | null}
 */
export function timestamp(entity, name) {
  const v = get(entity, name);
  return v?.tag === 'timestamp' ? new Date(Number(v.val)) : null;
}

/** A 64-bit integer from either engine: a number, or a BigInt beyond 2^53. */
function int(v) {
  if (typeof v === 'bigint') return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
  return v;
}

// ---------------------------------------------------------------- writing fields

const TAGS = ['null', 'boolean', 'integer', 'decimal', 'text', 'timestamp', 'reference', 'json'];

/**
 * The weir value of a JavaScript value:
 *
 * | JavaScript | weir value |
 * | --- | --- |
 * | `null`, `undefined` | `null` |
 * | boolean | `boolean` |
 * | integer number, BigInt | `integer` |
 * | other finite number | `decimal`, from its shortest text (`0.1` → `'0.1'`) |
 * | {@link Decimal} | `decimal` ({@link canonical} text) |
 * | string | `text` |
 * | `Date` | `timestamp` |
 * | `{ tag, val }` with a value's tag | itself (`{ tag: 'decimal', val: '10.50' }`, `{ tag: 'reference', val: { table: '', id } }`) |
 * | other object, array | `json` |
 *
 * @param {unknown} v
 * @returns {{ tag: string, val?: any }}
 */
export function value(v) {
  if (v === null || v === undefined) return { tag: 'null' };
  switch (typeof v) {
    case 'boolean':
      return { tag: 'boolean', val: v };
    case 'bigint':
      return { tag: 'integer', val: int(v) };
    case 'number':
      if (Number.isSafeInteger(v)) return { tag: 'integer', val: v };
      if (!Number.isFinite(v)) throw new TypeError(`${v} is not a weir value`);
      return { tag: 'decimal', val: canonical(v) };
    case 'string':
      return { tag: 'text', val: v };
    case 'object':
      if (isDecimal(v)) return { tag: 'decimal', val: canonical(v) };
      if (v instanceof Date) return { tag: 'timestamp', val: v.getTime() };
      if (TAGS.includes(v.tag) && Object.keys(v).every((k) => k === 'tag' || k === 'val')) return v;
      return { tag: 'json', val: stringify(v) };
    default:
      throw new TypeError(`a ${typeof v} is not a weir value`);
  }
}

/**
 * A field to return as a change or send to `records.create`/`update`:
 * `field('amount', Decimal('10.50'))`; the value as {@link value} makes it.
 * @param {string} name
 * @param {unknown} v
 * @returns {{ name: string, value: { tag: string, val?: any } }}
 */
export function field(name, v) {
  return { name, value: value(v) };
}

/**
 * Fields from an object's entries: `fields({ name: 'Ada', amount: Decimal('10.50') })`.
 * @param {Record<string, unknown>} values
 * @returns {{ name: string, value: { tag: string, val?: any } }[]}
 */
export function fields(values) {
  return Object.entries(values).map(([name, v]) => field(name, v));
}

// ---------------------------------------------------------------- JSON

/** JSON text of `v`; a BigInt is written as a number when exact, else as a string; a Decimal as a string. */
function stringify(v) {
  const text = JSON.stringify(v === undefined ? null : v, (_, x) => (typeof x === 'bigint' ? (typeof int(x) === 'number' ? Number(x) : x.toString()) : x));
  return text === undefined ? 'null' : text;
}

/** Parses JSON text; `fallback` when there is none or it is not JSON. */
function parse(doc, fallback) {
  if (typeof doc !== 'string') return fallback;
  try {
    return JSON.parse(doc);
  } catch {
    return fallback;
  }
}

/**
 * The step's configuration (`--config`), parsed; `null` when it has none.
 * @param {{ config: string }} ctx
 * @returns {any}
 */
export function config(ctx) {
  return parse(ctx.config, null);
}

/**
 * A background operation's input, parsed; `null` for record operations.
 * @param {{ input: string }} ctx
 * @returns {any}
 */
export function input(ctx) {
  return parse(ctx.input, null);
}

/**
 * Shared variable `name` of the operation (set by an earlier step), parsed;
 * `fallback` when it is not set.
 * @param {{ sharedVariables: { name: string, value: string }[] }} ctx
 * @param {string} name
 * @param {any} [fallback]
 * @returns {any}
 */
export function variable(ctx, name, fallback = undefined) {
  const v = ctx.sharedVariables?.find((x) => x.name === name);
  return v ? parse(v.value, fallback) : fallback;
}

/**
 * A shared variable to set (in an outcome's `variables`): `value` as JSON;
 * `null` removes it. {@link Outcome#variable} does this for you.
 * @param {string} name
 * @param {unknown} v
 * @returns {{ name: string, value: string }}
 */
export function setVariable(name, v) {
  return { name, value: stringify(v) };
}

// ---------------------------------------------------------------- sync outcomes and errors

/**
 * What a sync plug-in's `execute` returns: the WIT `outcome` record
 * (`changes`, `notes`, `variables`) with builder methods, returned as it is.
 */
export class Outcome {
  constructor() {
    /** @type {{ name: string, value: { tag: string, val?: any } }[]} */
    this.changes = [];
    /** @type {string[]} */
    this.notes = [];
    /** @type {{ name: string, value: string }[]} */
    this.variables = [];
  }

  /**
   * Sets a field of the target before it is written (pre-validation and
   * pre-operation only): `change('status', 'open')`, or `change(field(...))`.
   * @param {string | { name: string, value: object }} name
   * @param {unknown} [v]
   * @returns {this}
   */
  change(name, v) {
    this.changes.push(typeof name === 'string' ? field(name, v) : name);
    return this;
  }

  /**
   * A note for whoever started the operation (shown prefixed with the plug-in's name).
   * @param {string} message
   * @returns {this}
   */
  note(message) {
    this.notes.push(String(message));
    return this;
  }

  /**
   * Sets shared variable `name` (JSON) for the steps after this one and the
   * jobs the operation queues; `null` removes it.
   * @param {string} name
   * @param {unknown} v
   * @returns {this}
   */
  variable(name, v) {
    this.variables.push(setVariable(name, v));
    return this;
  }
}

/**
 * An empty {@link Outcome}: `return outcome().note('checked').variable('seen', true)`.
 * @returns {Outcome}
 */
export function outcome() {
  return new Outcome();
}

/**
 * A business rule said no: `throw rejected('over the credit limit')`. The
 * operation is rolled back and the caller sees `<plugin>: <message>`. (Both
 * engines turn a thrown `{ tag, val }` into the `err` of `execute`'s result.)
 * @param {string} message
 * @returns {{ tag: 'rejected', val: string }}
 */
export function rejected(message) {
  return { tag: 'rejected', val: String(message) };
}

/**
 * The plug-in could not do its work: `throw failed('...')`. Rolled back too.
 * @param {string} message
 * @returns {{ tag: 'failed', val: string }}
 */
export function failed(message) {
  return { tag: 'failed', val: String(message) };
}

/**
 * The `{ tag, val }` a host call threw (a records, secrets or jobs error):
 * StarlingMonkey throws a `ComponentError` and QuickJS an `Error`, each with
 * it as `payload`. `undefined` for anything else.
 * @param {unknown} e
 * @returns {{ tag: string, val: string } | undefined}
 */
export function hostError(e) {
  const err = e !== null && typeof e === 'object' && 'payload' in e ? e.payload : e;
  return err !== null && typeof err === 'object' && typeof err.tag === 'string' ? err : undefined;
}

/**
 * A records call's error as the Rust SDK prints it (`{e:?}`):
 * `RecordError::NotFound("no account record with id a1")`; anything else as `String(e)`.
 * @param {unknown} e
 * @returns {string}
 */
export function recordErrorText(e) {
  return errorText('RecordError', e);
}

/**
 * A jobs call's error, as {@link recordErrorText}: `JobError::Denied("...")`.
 * @param {unknown} e
 * @returns {string}
 */
export function jobErrorText(e) {
  return errorText('JobError', e);
}

function errorText(type, e) {
  const err = hostError(e);
  if (!err) return String(e);
  const kind = err.tag.replace(/(^|-)(\w)/g, (_, __, c) => c.toUpperCase());
  return `${type}::${kind}(${JSON.stringify(err.val)})`;
}

// ---------------------------------------------------------------- workflows

/**
 * Bytes to save as a workflow's state (a wait's or a checkpoint's `state`):
 * `value` as JSON, UTF-8. The next run reads it back with {@link load}.
 * @param {unknown} v
 * @returns {Uint8Array}
 */
export function save(v) {
  return utf8(stringify(v));
}

/**
 * The value a previous run saved (the `state` given to `run`); `fallback` on
 * the first run (no state) or when it is not JSON.
 * @param {Uint8Array | number[] | null | undefined} state
 * @param {any} [fallback]
 * @returns {any}
 */
export function load(state, fallback = undefined) {
  return state === null || state === undefined ? fallback : parse(fromUtf8(state), fallback);
}

/** The state bytes of a step: bytes as they are, anything else through {@link save}. */
function bytes(state) {
  return state instanceof Uint8Array ? state : save(state);
}

/** A number of milliseconds from a `Date`, a number or a BigInt. */
function ms(t) {
  return t instanceof Date ? t.getTime() : Number(t);
}

/**
 * Finished: `return done({ seen: ctx.target.id })`; `result` (JSON) is kept
 * as the job's result; none when left out.
 * @param {unknown} [result]
 * @returns {{ tag: 'done', val: string | undefined }}
 */
export function done(result) {
  return { tag: 'done', val: result === undefined ? undefined : stringify(result) };
}

/**
 * Wait until `at` (a `Date` or ms since the epoch), then run again with `state`.
 * @param {Date | number} at
 * @param {unknown} [state] saved with {@link save} (a Uint8Array as it is)
 */
export function waitUntil(at, state = null) {
  return { tag: 'wait-until', val: { at: ms(at), state: bytes(state) } };
}

/**
 * Wait until record `table`/`id` matches `condition` (a weir filter), or for
 * `timeoutMs`; then run again with `state`.
 * @param {{ table: string, id: string, condition: string, timeoutMs: number }} wait
 * @param {unknown} [state]
 */
export function waitFor({ table, id, condition, timeoutMs }, state = null) {
  return { tag: 'wait-for', val: { table, id, condition, timeoutMs: ms(timeoutMs), state: bytes(state) } };
}

/**
 * Wait until a record of `table` matches `filter`, or for `timeoutMs`; then
 * run again with `state`.
 * @param {{ table: string, filter: string, timeoutMs: number }} wait
 * @param {unknown} [state]
 */
export function waitForQuery({ table, filter, timeoutMs }, state = null) {
  return { tag: 'wait-for-query', val: { table, filter, timeoutMs: ms(timeoutMs), state: bytes(state) } };
}

/**
 * Wait until the jobs this one started ({@link start}'s ids) have finished
 * (all of them, or any one with `all: false`), or for `timeoutMs`; their
 * reports are then in `ctx.jobs` (see {@link jobResult}).
 * @param {string[]} jobs
 * @param {{ all?: boolean, timeoutMs: number }} options
 * @param {unknown} [state]
 */
export function waitForJobs(jobs, { all = true, timeoutMs }, state = null) {
  return { tag: 'wait-for-jobs', val: { jobs, all, timeoutMs: ms(timeoutMs), state: bytes(state) } };
}

/**
 * Save `state` and run on at once (a checkpoint): a later failure resumes from here.
 * @param {unknown} state
 */
export function checkpoint(state) {
  return { tag: 'checkpoint', val: bytes(state) };
}

/**
 * Worth retrying (a timeout, a busy dependency): `throw transient('...')`;
 * retried with backoff.
 * @param {string} message
 * @returns {{ tag: 'transient', val: string }}
 */
export function transient(message) {
  return { tag: 'transient', val: String(message) };
}

/**
 * Retrying cannot help: `throw permanent('...')`; the job fails at once.
 * @param {string} message
 * @returns {{ tag: 'permanent', val: string }}
 */
export function permanent(message) {
  return { tag: 'permanent', val: String(message) };
}

/**
 * Starts a job of `plugin` with `input` (JSON) as this job's child, keyed
 * `key` (starting the same key again answers the same job): its id. Only
 * async workflows whose step has `--may-start PLUGIN`; the job is created
 * when this run ends with a success, a wait or a checkpoint. A refusal is
 * thrown as the host's error ({@link jobErrorText}).
 * @param {string} plugin
 * @param {string} key
 * @param {unknown} [inputValue]
 * @param {{ queue?: string, priority?: number }} [options]
 * @returns {string}
 */
export function start(plugin, key, inputValue = null, { queue, priority } = {}) {
  return startJob({ plugin, input: stringify(inputValue), key, queue: queue ?? undefined, priority: priority ?? undefined });
}

/**
 * A job report's result (from `ctx.jobs`), parsed; `undefined` when it has none.
 * @param {{ result?: string | null }} report
 * @returns {any}
 */
export function jobResult(report) {
  return parse(report?.result ?? undefined, undefined);
}

// ---------------------------------------------------------------- host calls

/**
 * `records.query` with a filter and a top only: the records.
 * @param {string} table
 * @param {string} [filter] a weir filter expression (`''`: all)
 * @param {number} [top] at most this many (and never more than 5000)
 * @returns {object[]}
 */
export function query(table, filter = '', top = 5000) {
  return queryRecords({ table, filter, orderBy: [], columns: [], skip: 0, top, count: false }).records;
}

/**
 * Writes an info line to the call's trace.
 * @param {string} message
 */
export function info(message) {
  write('info', String(message));
}

/**
 * Writes a warning to the call's trace.
 * @param {string} message
 */
export function warn(message) {
  write('warn', String(message));
}

// ---------------------------------------------------------------- UTF-8 (QuickJS has no TextEncoder)

function utf8(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.codePointAt(i);
    if (c > 0xffff) i++;
    else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

function fromUtf8(b) {
  let s = '';
  for (let i = 0; i < b.length; ) {
    const c = b[i++];
    let cp;
    if (c < 0x80) cp = c;
    else if (c >= 0xc0 && c < 0xe0) cp = ((c & 31) << 6) | (b[i++] & 63);
    else if (c >= 0xe0 && c < 0xf0) cp = ((c & 15) << 12) | ((b[i++] & 63) << 6) | (b[i++] & 63);
    else if (c >= 0xf0) cp = ((c & 7) << 18) | ((b[i++] & 63) << 12) | ((b[i++] & 63) << 6) | (b[i++] & 63);
    else cp = 0xfffd;
    s += String.fromCodePoint(cp);
  }
  return s;
}
