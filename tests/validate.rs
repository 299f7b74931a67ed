//! Runtime validation: values against the types a `.flow` program declares,
//! through their JSON Schemas and the `jsonschema` crate.

use std::sync::Arc;

use serde_json::{json, Value};

use flowc::run::validate::Validators;
use flowc::types::{Ty, TypeId, TypeTable};
use flowc::Compilation;

use crate::support;

const SRC: &str = r#"
type Invoice {
  id: string matching /^INV-[0-9]{6}$/
  vendor: string len 1..40
  amount: number >= 0
  currency: "USD" | "EUR" | "GBP"
  note?: string
  tags?: [string len 1..10] len ..3
}

type Line { sku: string, qty: int >= 1 <= 100 }
type Order { id: string, lines: [Line] len 1..3, ship_to: Address }
type Address { city: string, zip?: string matching /^[0-9]{5}$/ }
type Rating = int > 0 < 6
type Many = [Line]

tool lookup(vendor: string, status: "pending" | "paid", limit?: int >= 1 <= 50, order?: Order) -> [Invoice] len ..200 {
  http GET "https://erp.example.com/invoices?vendor={vendor}"
  effect read
  timeout 5s
}
"#;

struct Fixture(Compilation);

impl Fixture {
    fn new() -> Fixture {
        let c = support::program::compiled(&[support::program::text("validate_test.flow", SRC)]);
        Fixture(c)
    }

    fn types(&self) -> &TypeTable {
        &self.0.program.as_ref().unwrap().program().types
    }

    fn named(&self, name: &str) -> Ty {
        let i = self
            .types()
            .defs
            .iter()
            .position(|d| d.name == name)
            .unwrap_or_else(|| panic!("no type {name}"));
        Ty::Named(TypeId(i as u32))
    }

    fn lookup(&self) -> &flowc::ir::Tool {
        self.0
            .program
            .as_ref()
            .unwrap()
            .program()
            .tools
            .iter()
            .find(|t| t.name == "lookup")
            .unwrap()
    }

    fn params(&self) -> Vec<(String, Ty, bool)> {
        self.lookup()
            .params
            .iter()
            .map(|p| (p.name.clone(), p.ty.clone(), p.optional))
            .collect()
    }
}

fn invoice() -> Value {
    json!({"id": "INV-000123", "vendor": "Acme", "amount": 12.5, "currency": "EUR"})
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

fn errors(r: Result<(), Vec<String>>) -> Vec<String> {
    r.expect_err("the value should not validate")
}

fn one_error(r: Result<(), Vec<String>>, path: &str, contains: &str) {
    let e = errors(r);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(&format!("{path}: ")),
        "expected the path {path}: {e:#?}"
    );
    assert!(e[0].contains(contains), "expected `{contains}`: {e:#?}");
}

#[test]
fn a_valid_record_passes() {
    let f = Fixture::new();
    let v = Validators::default();
    let ty = f.named("Invoice");
    assert_eq!(v.check(f.types(), &ty, &invoice()), Ok(()));
    let full = with(
        with(invoice(), "note", json!("late")),
        "tags",
        json!(["a", "bb"]),
    );
    assert_eq!(v.check(f.types(), &ty, &full), Ok(()));
}

#[test]
fn required_fields_are_required_and_optional_ones_are_not() {
    let f = Fixture::new();
    let v = Validators::default();
    let ty = f.named("Invoice");
    one_error(
        v.check(f.types(), &ty, &without(invoice(), "vendor")),
        "/",
        "\"vendor\" is a required property",
    );
    // An optional field may be absent, but when present it has its type.
    one_error(
        v.check(f.types(), &ty, &with(invoice(), "note", json!(3))),
        "/note",
        "not of type \"string\"",
    );
}

#[test]
fn extra_fields_are_rejected() {
    let f = Fixture::new();
    let v = Validators::default();
    one_error(
        v.check(
            f.types(),
            &f.named("Invoice"),
            &with(invoice(), "discount", json!(5)),
        ),
        "/",
        "discount",
    );
}

#[test]
fn literal_unions() {
    let f = Fixture::new();
    let v = Validators::default();
    one_error(
        v.check(
            f.types(),
            &f.named("Invoice"),
            &with(invoice(), "currency", json!("JPY")),
        ),
        "/currency",
        "\"JPY\"",
    );
}

#[test]
fn patterns() {
    let f = Fixture::new();
    let v = Validators::default();
    one_error(
        v.check(
            f.types(),
            &f.named("Invoice"),
            &with(invoice(), "id", json!("INV-12")),
        ),
        "/id",
        "does not match",
    );
    let addr = f.named("Address");
    assert_eq!(
        v.check(f.types(), &addr, &json!({"city": "Lyon", "zip": "69001"})),
        Ok(())
    );
    one_error(
        v.check(f.types(), &addr, &json!({"city": "Lyon", "zip": "6900"})),
        "/zip",
        "does not match",
    );
}

#[test]
fn numeric_bounds() {
    let f = Fixture::new();
    let v = Validators::default();
    one_error(
        v.check(
            f.types(),
            &f.named("Invoice"),
            &with(invoice(), "amount", json!(-3)),
        ),
        "/amount",
        "-3 is less than the minimum of 0",
    );
    let rating = f.named("Rating");
    assert_eq!(v.check(f.types(), &rating, &json!(5)), Ok(()));
    one_error(v.check(f.types(), &rating, &json!(6)), "/", "6");
    one_error(v.check(f.types(), &rating, &json!(0)), "/", "0");
    one_error(v.check(f.types(), &rating, &json!(2.5)), "/", "integer");
}

#[test]
fn string_and_list_lengths() {
    let f = Fixture::new();
    let v = Validators::default();
    let ty = f.named("Invoice");
    one_error(
        v.check(f.types(), &ty, &with(invoice(), "vendor", json!(""))),
        "/vendor",
        "shorter than 1",
    );
    one_error(
        v.check(
            f.types(),
            &ty,
            &with(invoice(), "tags", json!(["a", "b", "c", "d"])),
        ),
        "/tags",
        "has more than 3 items",
    );
    one_error(
        v.check(
            f.types(),
            &ty,
            &with(invoice(), "tags", json!(["ok", "much too long"])),
        ),
        "/tags/1",
        "longer than 10",
    );
}

#[test]
fn nested_named_types_report_the_full_path() {
    let f = Fixture::new();
    let v = Validators::default();
    let ty = f.named("Order");
    let good = json!({
        "id": "o-1",
        "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 100}],
        "ship_to": {"city": "Oslo"}
    });
    assert_eq!(v.check(f.types(), &ty, &good), Ok(()));

    let mut bad = good.clone();
    bad["lines"][1]["qty"] = json!(0);
    bad["ship_to"]["zip"] = json!("x");
    bad["ship_to"]["country"] = json!("NO");
    let e = errors(v.check(f.types(), &ty, &bad));
    assert_eq!(e.len(), 3, "{e:#?}");
    // Sorted by path.
    assert!(
        e[0].starts_with("/lines/1/qty: 0 is less than the minimum of 1"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("/ship_to: ") && e[1].contains("country"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("/ship_to/zip: ") && e[2].contains("does not match"),
        "{e:#?}"
    );

    let mut empty = good.clone();
    empty["lines"] = json!([]);
    one_error(v.check(f.types(), &ty, &empty), "/lines", "[]");
}

#[test]
fn the_root_is_named_slash() {
    let f = Fixture::new();
    let v = Validators::default();
    one_error(
        v.check(f.types(), &Ty::string(), &json!(3)),
        "/",
        "3 is not of type \"string\"",
    );
    one_error(
        v.check(f.types(), &f.named("Invoice"), &json!([1])),
        "/",
        "not of type \"object\"",
    );
    // `json` accepts anything.
    assert_eq!(
        v.check(f.types(), &Ty::Json, &json!({"any": [1, null]})),
        Ok(())
    );
    // Optional accepts null.
    let opt = Ty::Optional(Box::new(f.named("Address")));
    assert_eq!(v.check(f.types(), &opt, &Value::Null), Ok(()));
}

#[test]
fn at_most_twenty_errors_sorted() {
    let f = Fixture::new();
    let v = Validators::default();
    let lines: Vec<Value> = (0..25)
        .map(|i| json!({"sku": format!("s{i}"), "qty": 0}))
        .collect();
    let e = errors(v.check(f.types(), &f.named("Many"), &Value::Array(lines)));
    assert_eq!(e.len(), 20, "{e:#?}");
    assert_eq!(e[19], "…and 6 more violations");
    // By path, indexes as numbers (/2 before /10).
    for (i, m) in e[..19].iter().enumerate() {
        assert!(
            m.starts_with(&format!("/{i}/qty: 0 is less than the minimum of 1")),
            "{e:#?}"
        );
    }
    // Same path: by message.
    let lines = json!([{"sku": 1, "qty": 0, "x": true}]);
    let e = errors(v.check(f.types(), &f.named("Many"), &lines));
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("/0: Additional properties"), "{e:#?}");
    assert!(e[1].starts_with("/0/qty: "), "{e:#?}");
    assert!(e[2].starts_with("/0/sku: "), "{e:#?}");
}

#[test]
fn tool_arguments_against_parameters() {
    let f = Fixture::new();
    let v = Validators::default();
    let params = f.params();
    let types = f.types();
    // An object of arguments, as a run's input is checked.
    let args = |v: Value| -> Value {
        assert!(v.is_object());
        v
    };

    assert_eq!(
        v.check_args(
            types,
            &params,
            &args(json!({"vendor": "Acme", "status": "paid"}))
        ),
        Ok(())
    );
    assert_eq!(
        v.check_args(
            types,
            &params,
            &args(json!({"vendor": "Acme", "status": "paid", "limit": 10,
                "order": {"id": "o", "lines": [{"sku": "s", "qty": 2}], "ship_to": {"city": "Rome"}}}))
        ),
        Ok(())
    );
    one_error(
        v.check_args(types, &params, &args(json!({"vendor": "Acme"}))),
        "/",
        "\"status\" is a required property",
    );
    one_error(
        v.check_args(
            types,
            &params,
            &args(json!({"vendor": "Acme", "status": "paid", "page": 2})),
        ),
        "/",
        "page",
    );
    one_error(
        v.check_args(
            types,
            &params,
            &args(json!({"vendor": "Acme", "status": "late"})),
        ),
        "/status",
        "\"late\"",
    );
    one_error(
        v.check_args(
            types,
            &params,
            &args(json!({"vendor": "Acme", "status": "paid", "limit": 51})),
        ),
        "/limit",
        "51",
    );
    one_error(
        v.check_args(
            types,
            &params,
            &args(json!({"vendor": "Acme", "status": "paid",
                "order": {"id": "o", "lines": [{"sku": "s", "qty": 200}], "ship_to": {"city": "Rome"}}})),
        ),
        "/order/lines/0/qty",
        "200",
    );
}

#[test]
fn tool_results_against_the_output_type() {
    let f = Fixture::new();
    let v = Validators::default();
    let out = &f.lookup().output;
    assert_eq!(
        v.check(f.types(), out, &json!([invoice(), invoice()])),
        Ok(())
    );
    let e = errors(v.check(f.types(), out, &json!([invoice(), {"id": "INV-000001"}])));
    assert_eq!(
        e,
        [
            "/1: \"amount\" is a required property",
            "/1: \"currency\" is a required property",
            "/1: \"vendor\" is a required property",
        ]
    );
    let many: Vec<Value> = (0..201).map(|_| invoice()).collect();
    one_error(
        v.check(f.types(), out, &Value::Array(many)),
        "/",
        "more than 200 items",
    );
}

#[test]
fn validators_are_cached_per_schema_and_shared_between_threads() {
    let f = Fixture::new();
    let v = Arc::new(Validators::default());
    let ty = f.named("Invoice");
    assert_eq!(v.cached(), 0);
    assert!(v.check(f.types(), &ty, &invoice()).is_ok());
    assert!(v.check(f.types(), &ty, &json!({})).is_err());
    assert_eq!(v.cached(), 1, "one schema, one compiled validator");
    assert!(v.check(f.types(), &f.named("Order"), &json!({})).is_err());
    assert_eq!(v.cached(), 2);

    let types = f.types();
    std::thread::scope(|s| {
        for i in 0..8 {
            let v = v.clone();
            let ty = ty.clone();
            s.spawn(move || {
                for _ in 0..50 {
                    let value = if i % 2 == 0 {
                        invoice()
                    } else {
                        with(invoice(), "amount", json!(-1))
                    };
                    assert_eq!(v.check(types, &ty, &value).is_ok(), i % 2 == 0);
                }
            });
        }
    });
    assert_eq!(v.cached(), 2);
}

#[test]
fn remote_references_are_not_fetched() {
    let v = Validators::default();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "https://example.com/schemas/invoice.json"
    });
    let e = errors(v.check_schema(&schema, &json!({})));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("/: the type's schema does not compile"),
        "{e:#?}"
    );
}
