"""Unit tests of weir_guest in plain CPython (no componentize-py build: the
module's stand-in classes take the generated bindings' place).

    python3 -m unittest discover -s guest-examples/weir-guest-py/tests
"""

import datetime
import decimal
import json
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import weir_guest as weir  # noqa: E402

T = weir.wit_types


def entity(**values):
    """An entity of table `t` with the given fields (Python values, through `field`)."""
    return T.Entity(table="t", id="r1", fields=weir.fields(values))


def context(shared=None, config="null", input="null"):
    """Just the context fields the helpers read."""

    class Ctx:
        pass

    ctx = Ctx()
    ctx.shared_variables = [T.Variable(name=k, value=v) for k, v in (shared or {}).items()]
    ctx.config = config
    ctx.input = input
    return ctx


class Bindings(unittest.TestCase):
    def test_outside_a_build_the_stand_ins_are_used(self):
        self.assertFalse(weir.IN_COMPONENT)
        self.assertEqual(T.Value_Decimal("1.5").value, "1.5")


class Decimals(unittest.TestCase):
    def test_the_context_has_28_digits(self):
        self.assertGreaterEqual(decimal.getcontext().prec, 28)

    def test_sums_are_exact(self):
        e = entity(a=Decimal("0.1"), b=Decimal("0.2"))
        self.assertEqual(weir.decimal(e, "a") + weir.decimal(e, "b"), Decimal("0.3"))
        self.assertEqual(weir.to_decimal("0.1") + weir.to_decimal("0.2"), weir.to_decimal("0.3"))
        self.assertNotEqual(0.1 + 0.2, 0.3)  # what floats would have done

    def test_scale_is_kept_and_compares_equal(self):
        e = T.Entity("t", "r1", [T.Field("x", T.Value_Decimal("10.5")), T.Field("y", T.Value_Decimal("10.50"))])
        x, y = weir.decimal(e, "x"), weir.decimal(e, "y")
        self.assertEqual(x, y)
        self.assertEqual((str(x), str(y)), ("10.5", "10.50"))
        self.assertEqual(weir.field("y", y).value, T.Value_Decimal("10.50"))

    def test_28_digits_round_trip_exactly(self):
        for text in ["9999999999999999999999999999", "0.0000000000000000000000000001", "12345678901234567.89", "-1234567890.123456789012345678"]:
            d = weir.to_decimal(text)
            self.assertEqual(weir.field("n", d).value, T.Value_Decimal(text))
            self.assertEqual(weir.decimal(entity(n=d), "n"), Decimal(text))
        big = weir.to_decimal("1234567890123456789012345678")
        self.assertEqual(big + 1, Decimal("1234567890123456789012345679"))
        self.assertEqual(weir.to_decimal("12345678901234567.89") + weir.to_decimal("0.01"), Decimal("12345678901234567.90"))

    def test_canonical_text_is_what_weir_keeps(self):
        for d, text in [
            (Decimal("1E+3"), "1000"),
            (Decimal("1.5E-2"), "0.015"),
            (Decimal("-0"), "0"),
            (Decimal("-0.00"), "0.00"),
            (Decimal("+7"), "7"),
            (Decimal("100.000"), "100.000"),
        ]:
            self.assertEqual(weir.canonical(d), text)
        with self.assertRaises(ValueError):
            weir.canonical(Decimal("NaN"))
        with self.assertRaises(ValueError):
            weir.field("x", Decimal("Infinity"))

    def test_floats_are_refused(self):
        with self.assertRaises(TypeError):
            weir.field("x", 0.1)
        with self.assertRaises(TypeError):
            weir.to_decimal(0.1)

    def test_integer_columns_read_as_decimals(self):
        e = entity(n=7)
        self.assertEqual(weir.decimal(e, "n"), Decimal(7))
        self.assertIsNone(weir.decimal(entity(s="7"), "s"), "text is not a number column")
        bad = T.Entity("t", "r1", [T.Field("d", T.Value_Decimal("abc"))])
        self.assertIsNone(weir.decimal(bad, "d"))


class Reading(unittest.TestCase):
    def setUp(self):
        self.e = T.Entity(
            "t",
            "r1",
            [
                T.Field("name", T.Value_Text("Ada")),
                T.Field("doc", T.Value_Json('{"a":1}')),
                T.Field("n", T.Value_Integer(3)),
                T.Field("ok", T.Value_Boolean(False)),
                T.Field("customer", T.Value_Reference(T.Reference("account", "a1"))),
                T.Field("at", T.Value_Timestamp(1_700_000_000_123)),
                T.Field("gone", T.Value_Null()),
            ],
        )

    def test_typed_access(self):
        e = self.e
        self.assertEqual(weir.text(e, "name"), "Ada")
        self.assertEqual(weir.text(e, "doc"), '{"a":1}')
        self.assertEqual(weir.text(e, "customer"), "a1")
        self.assertEqual(weir.integer(e, "n"), 3)
        self.assertIs(weir.boolean(e, "ok"), False)
        self.assertEqual(weir.reference(e, "customer"), ("account", "a1"))
        self.assertEqual(weir.reference(e, "customer").table, "account")
        at = weir.timestamp(e, "at")
        self.assertEqual(at, datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=datetime.timezone.utc))

    def test_absent_null_and_other_types_are_none(self):
        e = self.e
        self.assertIsNone(weir.get(e, "missing"))
        self.assertEqual(weir.get(e, "gone"), T.Value_Null())
        for read in (weir.text, weir.integer, weir.boolean, weir.reference, weir.timestamp, weir.decimal):
            self.assertIsNone(read(e, "gone"), read.__name__)
            self.assertIsNone(read(e, "missing"), read.__name__)
            self.assertIsNone(read(None, "name"), read.__name__)
        self.assertIsNone(weir.integer(e, "name"))
        self.assertIsNone(weir.boolean(e, "n"))
        self.assertIsNone(weir.text(e, "n"))


class Building(unittest.TestCase):
    def test_python_values_map_to_wit_values(self):
        at = datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=datetime.timezone.utc)
        self.assertEqual(
            weir.fields(
                {"none": None, "yes": True, "n": -5, "d": Decimal("10.50"), "s": "Ada"},
                doc={"b": [1, Decimal("0.1")]},
                items=[1, 2],
                customer=weir.Ref("account", "a1"),
                other=T.Reference("", "a2"),
                at=at,
                raw=T.Value_Timestamp(5),
            ),
            [
                T.Field("none", T.Value_Null()),
                T.Field("yes", T.Value_Boolean(True)),
                T.Field("n", T.Value_Integer(-5)),
                T.Field("d", T.Value_Decimal("10.50")),
                T.Field("s", T.Value_Text("Ada")),
                T.Field("doc", T.Value_Json('{"b":[1,"0.1"]}')),
                T.Field("items", T.Value_Json("[1,2]")),
                T.Field("customer", T.Value_Reference(T.Reference("account", "a1"))),
                T.Field("other", T.Value_Reference(T.Reference("", "a2"))),
                T.Field("at", T.Value_Timestamp(1_700_000_000_123)),
                T.Field("raw", T.Value_Timestamp(5)),
            ],
        )

    def test_bool_is_not_an_integer(self):
        self.assertEqual(weir.field("b", False).value, T.Value_Boolean(False))

    def test_round_trip(self):
        at = datetime.datetime(2024, 2, 29, 12, 0, 0, 1000, tzinfo=datetime.timezone.utc)
        e = entity(name="Ada", n=2**63 - 1, ok=True, amount=Decimal("-0.03"), customer=weir.Ref("account", "a1"), at=at, doc={"k": "v"})
        self.assertEqual(weir.text(e, "name"), "Ada")
        self.assertEqual(weir.integer(e, "n"), 2**63 - 1)
        self.assertIs(weir.boolean(e, "ok"), True)
        self.assertEqual(weir.decimal(e, "amount"), Decimal("-0.03"))
        self.assertEqual(weir.reference(e, "customer"), weir.Ref("account", "a1"))
        self.assertEqual(weir.timestamp(e, "at"), at)
        self.assertEqual(json.loads(weir.text(e, "doc")), {"k": "v"})

    def test_refused_values(self):
        with self.assertRaises(ValueError):
            weir.field("n", 2**63)
        with self.assertRaises(ValueError):
            weir.field("at", datetime.datetime(2024, 1, 1))  # naive
        with self.assertRaises(TypeError):
            weir.field("pair", ("account", "a1"))
        with self.assertRaises(TypeError):
            weir.field("x", object())


class Json(unittest.TestCase):
    def test_variables_decode_json_with_exact_decimals(self):
        ctx = context(shared={"credit_limit": '"1000"', "rate": "0.1", "n": "3", "obj": '{"a": [true, null]}', "bad": "{"})
        self.assertEqual(weir.variable(ctx, "credit_limit"), "1000")
        self.assertEqual(weir.variable(ctx, "rate"), Decimal("0.1"))
        self.assertIsInstance(weir.variable(ctx, "rate"), Decimal)
        self.assertEqual(weir.variable(ctx, "n"), 3)
        self.assertEqual(weir.variable(ctx, "obj"), {"a": [True, None]})
        self.assertIsNone(weir.variable(ctx, "bad"))
        self.assertIsNone(weir.variable(ctx, "unset"))
        self.assertEqual(weir.variable(ctx, "unset", 0), 0)

    def test_set_variable_writes_json(self):
        self.assertEqual(weir.set_variable("credit_limit", Decimal("1000")), T.Variable("credit_limit", '"1000"'))
        self.assertEqual(weir.set_variable("x", {"a": 1, "b": "é"}), T.Variable("x", '{"a":1,"b":"é"}'))
        self.assertEqual(weir.set_variable("gone", None), T.Variable("gone", "null"))

    def test_config_and_input(self):
        ctx = context(config='{"limit": 12.50, "name": "x"}', input="null")
        self.assertEqual(weir.config(ctx), {"limit": Decimal("12.50"), "name": "x"})
        self.assertEqual(str(weir.config(ctx)["limit"]), "12.50")
        self.assertIsNone(weir.input(ctx))
        self.assertEqual(weir.input(context(input="[1, 2]")), [1, 2])

    def test_state_round_trip(self):
        state = {"step": 2, "total": Decimal("10.50"), "ids": ["a", "b"]}
        saved = weir.save(state)
        self.assertIsInstance(saved, bytes)
        self.assertEqual(weir.load(saved), {"step": 2, "total": "10.50", "ids": ["a", "b"]})
        self.assertIsNone(weir.load(None))
        self.assertEqual(weir.load(None, {"step": 0}), {"step": 0})

    def test_done(self):
        self.assertEqual(weir.done({"seen": "c1"}).value, '{"seen":"c1"}')
        self.assertIsNone(weir.done().value)


class Outcomes(unittest.TestCase):
    def test_builder(self):
        o = weir.Outcome().note("checked").variable("limit", Decimal("1000")).change("status", "ok")
        self.assertEqual(o.notes, ["checked"])
        self.assertEqual(o.variables, [T.Variable("limit", '"1000"')])
        self.assertEqual(o.changes, [T.Field("status", T.Value_Text("ok"))])
        self.assertEqual(weir.Outcome(), weir.Outcome(changes=[], notes=[], variables=[]))

    def test_outcome_function(self):
        o = weir.outcome(changes={"n": 1}, notes=["a"], variables={"v": [1]})
        self.assertEqual((o.changes, o.notes, o.variables), ([T.Field("n", T.Value_Integer(1))], ["a"], [T.Variable("v", "[1]")]))

    def test_errors_raise_err(self):
        with self.assertRaises(weir.Err) as raised:
            weir.rejected("the name must not be blank")
        self.assertEqual(raised.exception.value, weir._StandIn.PluginError_Rejected("the name must not be blank"))
        with self.assertRaises(weir.Err) as raised:
            weir.failed("cannot")
        self.assertIsInstance(raised.exception.value, weir._StandIn.PluginError_Failed)
        with self.assertRaises(weir.Err) as raised:
            weir.transient("busy")
        self.assertIsInstance(raised.exception.value, weir._StandIn.WorkflowError_Transient)
        with self.assertRaises(weir.Err) as raised:
            weir.permanent("no")
        self.assertIsInstance(raised.exception.value, weir._StandIn.WorkflowError_Permanent)

    def test_record_error_text_is_the_rust_debug_form(self):
        class RecordError_NotFound:
            def __init__(self, value):
                self.value = value

        e = RecordError_NotFound('no account record with id "a1"')
        self.assertEqual(weir.record_error_text(e), 'RecordError::NotFound("no account record with id \\"a1\\"")')
        self.assertEqual(weir.record_error_text(weir.Err(e)), weir.record_error_text(e))

    def test_host_calls_need_a_build(self):
        with self.assertRaises(RuntimeError):
            weir.info("x")
        with self.assertRaises(RuntimeError):
            weir.start("child", "k1", {"a": 1})


if __name__ == "__main__":
    unittest.main()
