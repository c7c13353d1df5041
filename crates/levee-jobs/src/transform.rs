//! A job's optional jq filter, run by jaq (jq's language, with its standard library).

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

/// Check that `code` parses and compiles, for config validation.
pub fn check(code: &str) -> Result<(), String> {
    run(code, None).map(|_| ())
}

/// Apply `code` to `input`. One output is the result; several are collected into an array.
pub fn apply(code: &str, input: &Value) -> Result<Value, String> {
    run(code, Some(input))?.ok_or_else(|| "the transform produced nothing".to_owned())
}

fn run(code: &str, input: Option<&Value>) -> Result<Option<Value>, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errors| format!("cannot parse the jq filter: {errors:?}"))?;
    let filter = Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| {
            let names: Vec<String> = errors
                .into_iter()
                .flat_map(|(_, undefined)| undefined)
                .map(|(name, kind)| format!("{name} ({kind:?})"))
                .collect();
            format!("undefined in the jq filter: {}", names.join(", "))
        })?;
    let Some(input) = input else {
        return Ok(None);
    };
    let input = jaq_json::read::parse_single(&serde_json::to_vec(input).expect("JSON"))
        .map_err(|e| format!("cannot read the data: {e:?}"))?;
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut outputs = Vec::new();
    for output in filter.id.run((ctx, input)).map(unwrap_valr) {
        let output = output.map_err(|e| format!("the transform failed: {e}"))?;
        let json = serde_json::from_str(&output.to_string())
            .map_err(|e| format!("the transform made something that is not JSON: {e}"))?;
        outputs.push(json);
    }
    Ok(match outputs.len() {
        0 => None,
        1 => outputs.pop(),
        _ => Some(Value::Array(outputs)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_with_the_standard_library() {
        let input = json!({"places": [{"id": 1, "name": "A", "zip": "37415", "x": 0}]});
        assert_eq!(
            apply(".places | map({id, name, zip})", &input).unwrap(),
            json!([{"id": 1, "name": "A", "zip": "37415"}])
        );
        assert_eq!(
            apply(".[0]", &json!([{"count": 3}])).unwrap(),
            json!({"count": 3})
        );
        assert_eq!(apply(".[]", &json!([1, 2])).unwrap(), json!([1, 2]));
    }

    #[test]
    fn bad_filters_and_runtime_errors_are_reported() {
        assert!(check(".places | map(").is_err());
        assert!(
            check("nosuchfunction(1)")
                .unwrap_err()
                .contains("nosuchfunction")
        );
        assert!(check(".a | map(.b)").is_ok());
        assert!(
            apply(".a.b", &json!({"a": 1}))
                .unwrap_err()
                .contains("failed")
        );
        assert_eq!(
            apply("empty", &json!(1)).unwrap_err(),
            "the transform produced nothing"
        );
    }
}
