//! `levee shard FILE.csv --key zip --out 'zip/{key}.json'`: one JSON file per key of a
//! CSV, for lookup tables such as one file per US ZIP code.
//!
//! A key on one row gives that row as an object; a key on several rows gives an array of
//! them, in file order. A value that is a JSON number in its exact written form stays a
//! number (`-73.0451`); anything else, such as `00501`, stays a string; an empty cell is
//! `null`.

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;
use levee_store::{CacheRules, check_path};
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use crate::sync::SyncFile;

#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// The column whose value names the file.
    pub key: String,
    /// The file path, with `{key}` where the key goes.
    pub out: String,
    /// The columns to keep, in this order. Default: all.
    pub fields: Option<Vec<String>>,
}

impl ShardOptions {
    /// The part of the store the output lives in: the pattern up to its last `/` before
    /// `{key}` (so `zip/{key}.json` → `zip/`).
    pub fn scope(&self) -> String {
        let before = self.out.split("{key}").next().unwrap_or("");
        match before.rfind('/') {
            Some(i) => before[..=i].to_owned(),
            None => String::new(),
        }
    }
}

/// What a shard read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShardStats {
    pub rows: usize,
    pub files: usize,
    /// Rows whose key was empty or could not be a file name.
    pub skipped: usize,
}

/// Read the CSV and make one file per key.
pub fn shard(
    input: impl Read,
    options: &ShardOptions,
    rules: &CacheRules,
) -> Result<(Vec<SyncFile>, ShardStats), String> {
    if !options.out.contains("{key}") {
        return Err(format!("--out {:?} must contain {{key}}", options.out));
    }
    let mut reader = csv::Reader::from_reader(input);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("reading the header row: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    let position = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no column {name:?}; the columns are {}", header.join(", ")))
    };
    let key_at = position(&options.key)?;
    let columns: Vec<(String, usize)> = match &options.fields {
        Some(fields) => fields
            .iter()
            .map(|f| Ok((f.clone(), position(f)?)))
            .collect::<Result<_, String>>()?,
        None => header.iter().cloned().zip(0..).collect(),
    };

    let mut stats = ShardStats::default();
    let mut groups: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("reading the CSV: {e}"))?;
        stats.rows += 1;
        let key = record.get(key_at).unwrap_or("").trim();
        let path = options.out.replace("{key}", key);
        if key.is_empty() || key.contains('/') || check_path(&path).is_err() {
            stats.skipped += 1;
            continue;
        }
        let row: Vec<(&str, Value)> = columns
            .iter()
            .map(|(name, at)| {
                let cell = record.get(*at).unwrap_or("");
                let value = if *at == key_at {
                    Value::String(cell.trim().to_owned())
                } else {
                    typed(cell)
                };
                (name.as_str(), value)
            })
            .collect();
        let mut json = Vec::new();
        let mut serializer = serde_json::Serializer::new(&mut json);
        let mut map = serializer
            .serialize_map(Some(row.len()))
            .expect("writing to memory");
        for (name, value) in &row {
            map.serialize_entry(name, value).expect("writing to memory");
        }
        map.end().expect("writing to memory");
        groups.entry(path).or_default().push(json);
    }
    let files: Vec<SyncFile> = groups
        .into_iter()
        .map(|(path, rows)| {
            let body = if rows.len() == 1 {
                rows.into_iter().next().expect("one row")
            } else {
                let mut body = b"[".to_vec();
                body.extend(rows.join(&b","[..]));
                body.push(b']');
                body
            };
            SyncFile {
                headers: rules.headers(&path),
                path,
                body: Bytes::from(body),
                pointer: false,
            }
        })
        .collect();
    stats.files = files.len();
    Ok((files, stats))
}

/// A CSV cell as JSON: a number when it is one exactly as written, else a string; an
/// empty cell is `null`.
pub fn typed(cell: &str) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    if let Ok(number) = serde_json::from_str::<serde_json::Number>(cell)
        && number.to_string() == cell
    {
        return Value::Number(number);
    }
    Value::String(cell.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_numbers_and_codes_stay_strings() {
        assert_eq!(typed("-73.0451"), serde_json::json!(-73.0451));
        assert_eq!(typed("42"), serde_json::json!(42));
        assert_eq!(typed("00501"), serde_json::json!("00501"));
        assert_eq!(typed("1.50"), serde_json::json!("1.50"));
        assert_eq!(typed("1e3"), serde_json::json!("1e3"));
        assert_eq!(
            typed("12345678901234567890123"),
            serde_json::json!("12345678901234567890123")
        );
        assert_eq!(typed(""), Value::Null);
        assert_eq!(typed("Holtsville"), serde_json::json!("Holtsville"));
    }

    #[test]
    fn repeated_keys_are_grouped_in_file_order() {
        let csv = "id,name,n\nb,first,1\na,only,2\nb,second,3\n,blank,4\n../x,evil,5\n";
        let options = ShardOptions {
            key: "id".into(),
            out: "k/{key}.json".into(),
            fields: None,
        };
        let (files, stats) = shard(csv.as_bytes(), &options, &CacheRules::default()).unwrap();
        assert_eq!(
            stats,
            ShardStats {
                rows: 5,
                files: 2,
                skipped: 2
            }
        );
        assert_eq!(files[0].path, "k/a.json");
        assert_eq!(&files[0].body[..], br#"{"id":"a","name":"only","n":2}"#);
        assert_eq!(
            &files[1].body[..],
            br#"[{"id":"b","name":"first","n":1},{"id":"b","name":"second","n":3}]"#
        );
        assert_eq!(options.scope(), "k/");
    }

    #[test]
    fn fields_pick_and_order_columns() {
        let csv = "zip,city,state\n37415,Chattanooga,TN\n";
        let options = ShardOptions {
            key: "zip".into(),
            out: "{key}.json".into(),
            fields: Some(vec!["state".into(), "city".into()]),
        };
        let (files, _) = shard(csv.as_bytes(), &options, &CacheRules::default()).unwrap();
        assert_eq!(
            &files[0].body[..],
            br#"{"state":"TN","city":"Chattanooga"}"#
        );
        assert_eq!(options.scope(), "");
        let bad = ShardOptions {
            fields: Some(vec!["nope".into()]),
            ..options
        };
        assert!(
            shard(csv.as_bytes(), &bad, &CacheRules::default())
                .unwrap_err()
                .contains("no column \"nope\"")
        );
    }
}
