// Unit tests of weir-guest in plain Node (no wasm): `node --test test/` in
// guest-examples/weir-guest-js. They load the file projects vendor,
// dist/weir-guest.js, with weir's imports (`weir:plugin/...`, which exist
// only inside a component) resolved to a stand-in that calls
// `globalThis.weirHost[name]`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { register } from 'node:module';

const hooks = `
const host = 'data:text/javascript,' + encodeURIComponent(
  'const call = (name) => (...args) => globalThis.weirHost[name](...args);' +
  'export const write = call("write"), get = call("get"), query = call("query"), start = call("start");');
export async function resolve(specifier, context, next) {
  return specifier.startsWith('weir:plugin/') ? { url: host, shortCircuit: true } : next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`);

const dir = new URL('..', import.meta.url);
const w = await import(new URL('dist/weir-guest.js', dir).href);
const { Decimal } = w;

/** An entity with the given WIT values. */
const entity = (values) => ({ table: 't', id: 'r1', fields: Object.entries(values).map(([name, value]) => ({ name, value })) });

test('decimals are exact', () => {
  assert.ok(Decimal('0.1').plus('0.2').eq('0.3'));
  assert.ok(Decimal(0.1).plus(0.2).eq(Decimal('0.3')), 'numbers are read as their text');
  assert.notEqual(0.1 + 0.2, 0.3);
  assert.ok(Decimal('10.5').eq('10.50'));
  assert.equal(Decimal('10.5').cmp('10.50'), 0);
  assert.ok(Decimal('10.51').gt('10.5'));
  assert.ok(Decimal('-0.03').lt(0));
  // 28 significant digits, weir's limit, and beyond: no rounding in +, -, *.
  const big = Decimal('9999999999999999999999999999');
  assert.equal(String(big.plus(1)), '10000000000000000000000000000');
  assert.equal(String(Decimal('1234567890123456789.012345678').times(10)), '12345678901234567890.12345678');
  assert.equal(String(Decimal('0.0000000000000000000000000001').times(3)), '0.0000000000000000000000000003');
  assert.equal(String(Decimal('12345678901234567.89').minus('0.01')), '12345678901234567.88');
  // Division rounds to Decimal.DP (20) places, half up.
  assert.equal(String(Decimal(1).div(3)), '0.33333333333333333333');
  assert.equal(String(Decimal('2.675').round(2)), '2.68');
  assert.equal(String(Decimal('2.665').round(2, Decimal.roundHalfEven)), '2.66');
});

test('decimals print without an exponent, canonical as weir keeps them', () => {
  assert.equal(String(Decimal('1e-10')), '0.0000000001');
  assert.equal(`${Decimal('2e30')}`, '2000000000000000000000000000000');
  assert.equal(w.canonical(Decimal('10.50')), '10.5');
  assert.equal(w.canonical(Decimal('1e3')), '1000');
  assert.equal(w.canonical(Decimal('-0')), '0');
  assert.equal(w.canonical('+1.5'), '1.5');
  assert.equal(w.canonical(12n), '12');
  assert.equal(w.canonical(0.1), '0.1');
  assert.throws(() => w.canonical('abc'), TypeError);
});

test('reading columns of either engine', () => {
  const e = entity({
    amount: { tag: 'decimal', val: '95.50' },
    count: { tag: 'integer', val: 7n }, // StarlingMonkey: a BigInt
    qcount: { tag: 'integer', val: 7 }, // QuickJS: a number
    huge: { tag: 'integer', val: 9007199254740993n },
    name: { tag: 'text', val: 'Ada' },
    meta: { tag: 'json', val: '{"a":1}' },
    ok: { tag: 'boolean', val: false },
    customer: { tag: 'reference', val: { table: 'account', id: 'a1' } },
    created_at: { tag: 'timestamp', val: 1700000000000n },
    gone: { tag: 'null' },
  });
  assert.ok(w.decimal(e, 'amount').eq('95.5'));
  assert.equal(w.decimalText(e, 'amount'), '95.50');
  assert.ok(w.decimal(e, 'count').eq(7));
  assert.ok(w.decimal(e, 'qcount').eq(7));
  assert.equal(w.decimalText(e, 'count'), '7');
  assert.equal(w.integer(e, 'count'), 7);
  assert.equal(w.integer(e, 'qcount'), 7);
  assert.equal(w.integer(e, 'huge'), 9007199254740993n, 'exact beyond 2^53');
  assert.equal(w.text(e, 'name'), 'Ada');
  assert.equal(w.text(e, 'meta'), '{"a":1}');
  assert.equal(w.text(e, 'customer'), 'a1');
  assert.equal(w.boolean(e, 'ok'), false);
  assert.deepEqual(w.reference(e, 'customer'), { table: 'account', id: 'a1' });
  assert.equal(w.timestamp(e, 'created_at').toISOString(), '2023-11-14T22:13:20.000Z');
  assert.deepEqual(w.get(e, 'gone'), { tag: 'null' });
  assert.equal(w.get(e, 'missing'), undefined, 'absent: undefined');
  for (const read of [w.decimal, w.decimalText, w.integer, w.text, w.boolean, w.reference, w.timestamp]) {
    assert.equal(read(e, 'gone'), null, `${read.name} of a null column`);
    assert.equal(read(e, 'missing'), null, `${read.name} of an absent column`);
    assert.equal(read(undefined, 'name'), null, `${read.name} of an absent entity (StarlingMonkey)`);
    assert.equal(read(null, 'name'), null, `${read.name} of an absent entity (QuickJS)`);
  }
  assert.equal(w.decimal(e, 'name'), null, 'another type');
  assert.equal(w.integer(e, 'amount'), null);
  assert.equal(w.boolean(e, 'name'), null);
});

test('building fields', () => {
  assert.deepEqual(w.field('a', null), { name: 'a', value: { tag: 'null' } });
  assert.deepEqual(w.field('a', undefined), { name: 'a', value: { tag: 'null' } });
  assert.deepEqual(w.field('a', true), { name: 'a', value: { tag: 'boolean', val: true } });
  assert.deepEqual(w.field('a', 42), { name: 'a', value: { tag: 'integer', val: 42 } });
  assert.deepEqual(w.field('a', 42n), { name: 'a', value: { tag: 'integer', val: 42 } }, 'a BigInt goes as a number (QuickJS takes no BigInt)');
  assert.deepEqual(w.field('a', 2n ** 60n), { name: 'a', value: { tag: 'integer', val: 2n ** 60n } }, 'exact beyond 2^53');
  assert.deepEqual(w.field('a', 0.1), { name: 'a', value: { tag: 'decimal', val: '0.1' } });
  assert.deepEqual(w.field('a', Decimal('10.50')), { name: 'a', value: { tag: 'decimal', val: '10.5' } });
  assert.deepEqual(w.field('a', Decimal('0.1').plus('0.2')), { name: 'a', value: { tag: 'decimal', val: '0.3' } });
  assert.deepEqual(w.field('a', Decimal('1e-9')), { name: 'a', value: { tag: 'decimal', val: '0.000000001' } });
  assert.deepEqual(w.field('a', 'x'), { name: 'a', value: { tag: 'text', val: 'x' } });
  assert.deepEqual(w.field('a', new Date(1700000000000)), { name: 'a', value: { tag: 'timestamp', val: 1700000000000 } });
  assert.deepEqual(w.field('a', { b: [1, 'two', null], c: 3n, d: Decimal('1.50') }), { name: 'a', value: { tag: 'json', val: '{"b":[1,"two",null],"c":3,"d":"1.5"}' } });
  assert.deepEqual(w.field('a', [1, 2]), { name: 'a', value: { tag: 'json', val: '[1,2]' } });
  assert.deepEqual(w.field('a', { tag: 'decimal', val: '10.50' }), { name: 'a', value: { tag: 'decimal', val: '10.50' } }, 'a WIT value as it is');
  assert.deepEqual(w.field('a', { tag: 'reference', val: { table: '', id: 'a1' } }).value, { tag: 'reference', val: { table: '', id: 'a1' } });
  assert.deepEqual(w.field('a', { tag: 'x', val: 1 }).value, { tag: 'json', val: '{"tag":"x","val":1}' }, 'not a value tag: JSON');
  assert.throws(() => w.field('a', NaN), TypeError);
  assert.deepEqual(w.fields({ name: 'Ada', n: 1 }), [
    { name: 'name', value: { tag: 'text', val: 'Ada' } },
    { name: 'n', value: { tag: 'integer', val: 1 } },
  ]);
  // A field read is a field written back.
  const e = entity({ amount: { tag: 'decimal', val: '12345678901234567.89' } });
  assert.deepEqual(w.field('amount', w.decimal(e, 'amount')).value, { tag: 'decimal', val: '12345678901234567.89' });
});

test('JSON: config, input, shared variables', () => {
  const ctx = {
    config: '{"limit":"1000","on":true}',
    input: 'null',
    sharedVariables: [
      { name: 'credit_limit', value: '"1000"' },
      { name: 'n', value: '3' },
      { name: 'bad', value: 'not json' },
    ],
  };
  assert.deepEqual(w.config(ctx), { limit: '1000', on: true });
  assert.equal(w.input(ctx), null);
  assert.equal(w.input({ input: '{"x":[1]}' }).x[0], 1);
  assert.equal(w.config({ config: 'nope' }), null);
  assert.equal(w.variable(ctx, 'credit_limit'), '1000');
  assert.equal(w.variable(ctx, 'n'), 3);
  assert.equal(w.variable(ctx, 'missing'), undefined);
  assert.equal(w.variable(ctx, 'missing', 0), 0);
  assert.equal(w.variable(ctx, 'bad', 'fallback'), 'fallback');
  assert.deepEqual(w.setVariable('credit_limit', '1000'), { name: 'credit_limit', value: '"1000"' });
  assert.deepEqual(w.setVariable('limit', Decimal('10.50')), { name: 'limit', value: '"10.5"' });
  assert.deepEqual(w.setVariable('gone', null), { name: 'gone', value: 'null' });
  assert.deepEqual(w.setVariable('big', { n: 2n ** 60n }), { name: 'big', value: '{"n":"1152921504606846976"}' });
});

test('outcomes are the WIT record, with builder methods', () => {
  const o = w.outcome().note('checked').variable('seen', true).change('status', 'open').change(w.field('n', 1));
  assert.deepEqual({ ...o }, {
    changes: [
      { name: 'status', value: { tag: 'text', val: 'open' } },
      { name: 'n', value: { tag: 'integer', val: 1 } },
    ],
    notes: ['checked'],
    variables: [{ name: 'seen', value: 'true' }],
  });
  assert.deepEqual(Object.keys(w.outcome()), ['changes', 'notes', 'variables']);
});

test('errors', () => {
  assert.deepEqual(w.rejected('no'), { tag: 'rejected', val: 'no' });
  assert.deepEqual(w.failed('broken'), { tag: 'failed', val: 'broken' });
  assert.deepEqual(w.transient('busy'), { tag: 'transient', val: 'busy' });
  assert.deepEqual(w.permanent('never'), { tag: 'permanent', val: 'never' });
  // StarlingMonkey throws a ComponentError, QuickJS an Error, each with the WIT error as `payload`.
  const thrown = Object.assign(new Error('[object Object] (see error.payload)'), { payload: { tag: 'not-found', val: 'no account record with id zz' } });
  assert.equal(w.recordErrorText(thrown), 'RecordError::NotFound("no account record with id zz")');
  assert.equal(w.recordErrorText({ tag: 'denied', val: 'x' }), 'RecordError::Denied("x")');
  assert.equal(w.jobErrorText(Object.assign(new Error(), { payload: { tag: 'not-found', val: 'p' } })), 'JobError::NotFound("p")');
  assert.equal(w.recordErrorText(new Error('boom')), 'Error: boom');
  assert.deepEqual(w.hostError(thrown), { tag: 'not-found', val: 'no account record with id zz' });
  assert.equal(w.hostError('x'), undefined);
});

test('workflow state and steps', () => {
  const state = { step: 2, name: 'Zoë ✓ 𝄞', ids: ['a'], amount: Decimal('1.50') };
  const bytes = w.save(state);
  assert.ok(bytes instanceof Uint8Array);
  assert.deepEqual([...bytes], [...Buffer.from(JSON.stringify(state), 'utf8')], 'UTF-8 JSON');
  assert.deepEqual(w.load(bytes), { step: 2, name: 'Zoë ✓ 𝄞', ids: ['a'], amount: '1.5' });
  assert.deepEqual(w.load([...bytes]).step, 2, 'a plain array of bytes too');
  assert.equal(w.load(undefined), undefined, 'first run (StarlingMonkey)');
  assert.deepEqual(w.load(null, { step: 0 }), { step: 0 }, 'first run (QuickJS), with a fallback');
  assert.equal(w.load(new Uint8Array([1, 2]), 'bad'), 'bad');
  assert.deepEqual(w.done({ seen: 'c1' }), { tag: 'done', val: '{"seen":"c1"}' });
  assert.deepEqual(w.done(), { tag: 'done', val: undefined });
  const at = new Date(1900000000000);
  assert.deepEqual(w.waitUntil(at, { n: 1 }), { tag: 'wait-until', val: { at: 1900000000000, state: w.save({ n: 1 }) } });
  assert.equal(w.waitUntil(1900000000000n).val.at, 1900000000000, 'a number, not a BigInt');
  assert.deepEqual(w.waitFor({ table: 'expense', id: 'e1', condition: 'approved eq true', timeoutMs: 60000 }, 'x'), {
    tag: 'wait-for',
    val: { table: 'expense', id: 'e1', condition: 'approved eq true', timeoutMs: 60000, state: w.save('x') },
  });
  assert.deepEqual(w.waitForQuery({ table: 'approval', filter: "expense eq 'e1'", timeoutMs: 1000 }).val.state, w.save(null));
  assert.deepEqual(w.waitForJobs(['j1', 'j2'], { timeoutMs: 5000 }, { n: 1 }).val, { jobs: ['j1', 'j2'], all: true, timeoutMs: 5000, state: w.save({ n: 1 }) });
  assert.equal(w.waitForJobs(['j1'], { all: false, timeoutMs: 1 }).val.all, false);
  const raw = new Uint8Array([123, 125]);
  assert.equal(w.checkpoint(raw).val, raw, 'bytes as they are');
  assert.deepEqual(w.jobResult({ result: '{"ok":1}' }), { ok: 1 });
  assert.equal(w.jobResult({ result: null }), undefined);
  assert.equal(w.jobResult({}), undefined);
});

test('host calls go through weir:plugin imports', () => {
  const calls = [];
  globalThis.weirHost = {
    start: (options) => (calls.push(['start', options]), 'job-1'),
    write: (level, message) => calls.push(['write', level, message]),
    query: (options) => (calls.push(['query', options]), { records: [{ id: 'r1' }], count: undefined }),
  };
  assert.equal(w.start('notify', 'notify-c1', { id: 'c1' }), 'job-1');
  w.start('notify', 'k2', undefined, { queue: 'slow', priority: 7 });
  w.info('hello');
  w.warn('careful');
  assert.deepEqual(w.query('account', "name eq 'Contoso'", 1), [{ id: 'r1' }]);
  assert.deepEqual(calls, [
    ['start', { plugin: 'notify', input: '{"id":"c1"}', key: 'notify-c1', queue: undefined, priority: undefined }],
    ['start', { plugin: 'notify', input: 'null', key: 'k2', queue: 'slow', priority: 7 }],
    ['write', 'info', 'hello'],
    ['write', 'warn', 'careful'],
    ['query', { table: 'account', filter: "name eq 'Contoso'", orderBy: [], columns: [], skip: 0, top: 1, count: false }],
  ]);
});

const fresh = existsSync(new URL('node_modules/big.js/big.mjs', dir));
test('dist/weir-guest.js is what `npm run build` writes from src/', { skip: !fresh && 'run `npm ci` here first' }, async () => {
  const { bundle } = await import(new URL('scripts/bundle.js', dir).href);
  assert.ok(readFileSync(new URL('dist/weir-guest.js', dir), 'utf8') === bundle(), 'dist/weir-guest.js is stale: run `npm run build`');
});

test('the example copies dist/weir-guest.js before it builds', () => {
  // weir's JavaScript example takes the file at build time (not kept in git);
  // `weir plugin new --lang js` writes dist/weir-guest.js itself (include_str!).
  const pkg = new URL('../js/credit-check/package.json', dir);
  if (existsSync(pkg)) {
    const scripts = JSON.parse(readFileSync(pkg, 'utf8')).scripts;
    for (const name of ['build', 'build:nowasi', 'build:quickjs']) {
      assert.ok(scripts[name].startsWith('cp ../../weir-guest-js/dist/weir-guest.js . && '), `${name}: ${scripts[name]}`);
    }
  }
});
