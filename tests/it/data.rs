//! `Example` and dataset loading.

use std::io::Write;
use std::path::{Path, PathBuf};

use dspy_rhai::data::{load_dataset, Example, LoadOptions};
use dspy_rhai::evaluate::metrics::{builtin, parse_integer_answer};
use dspy_rhai::Error;
use serde_json::{json, Map, Value};

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn write_gz(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    gz.write_all(contents.as_bytes()).unwrap();
    gz.finish().unwrap();
    path
}

/// The `n` field of each example, in order.
fn numbers(examples: &[Example]) -> Vec<u64> {
    examples
        .iter()
        .map(|e| e.get("n").and_then(Value::as_u64).unwrap())
        .collect()
}

fn numbered_jsonl(count: u64) -> String {
    (0..count)
        .map(|n| format!("{{\"q\": \"question {n}\", \"n\": {n}}}\n"))
        .collect()
}

/// The `(line, message)` of a [`Error::Data`], or a panic.
fn data_error(result: dspy_rhai::Result<Vec<Example>>) -> (usize, String) {
    match result {
        Err(Error::Data { line, message, .. }) => (line, message),
        Err(other) => panic!("expected a data error, got {other}"),
        Ok(rows) => panic!("expected an error, got {} rows", rows.len()),
    }
}

#[test]
fn example_splits_inputs_and_labels_in_field_order() {
    let ex = Example::new(map(
        json!({ "answer": "4", "question": "2+2?", "hint": "add" }),
    ))
    .with_inputs(&["question", "hint", "question"]);
    assert_eq!(ex.input_keys(), ["question", "hint"]);
    assert_eq!(ex.get("answer"), Some(&json!("4")));
    assert_eq!(ex.get("missing"), None);
    let inputs = ex.inputs();
    assert_eq!(inputs.keys().collect::<Vec<_>>(), ["question", "hint"]);
    assert_eq!(ex.labels(), map(json!({ "answer": "4" })));
    assert!(ex.is_input("hint") && !ex.is_input("answer"));

    let mut changed = ex.clone();
    assert_eq!(changed.insert("answer", json!("four")), Some(json!("4")));
    changed.insert("extra", json!(1));
    assert_eq!(changed.fields().keys().next_back().unwrap(), "extra");
    assert_ne!(changed, ex);
}

#[test]
fn example_equality_is_dspy_store_equality() {
    let a = Example::new(map(json!({ "q": "x", "a": "y" }))).with_inputs(&["q"]);
    let b = Example::new(map(json!({ "a": "y", "q": "x" })));
    // DSPy's Example.__eq__ compares the stores only: order and inputs aside.
    assert_eq!(a, b);
    assert_ne!(a, Example::new(map(json!({ "q": "x", "a": "z" }))));
    assert!(Example::new(Map::new()).inputs().is_empty());
}

#[test]
fn example_round_trips_through_serde() {
    let ex = Example::new(map(json!({ "q": "x", "a": ["y", 1] }))).with_inputs(&["q"]);
    let text = serde_json::to_string(&ex).unwrap();
    assert_eq!(
        text,
        r#"{"fields":{"q":"x","a":["y",1]},"input_keys":["q"]}"#
    );
    let back: Example = serde_json::from_str(&text).unwrap();
    assert_eq!(back, ex);
    assert_eq!(back.input_keys(), ["q"]);
    let bare: Example = serde_json::from_str(r#"{"fields":{"q":"x"}}"#).unwrap();
    assert!(bare.input_keys().is_empty());
}

#[test]
fn jsonl_skips_blank_lines_and_keeps_field_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        "\u{feff}{\"question\": \"a?\", \"answer\": \"1\", \"n\": 0}\n\n   \n{\"answer\": \"2\", \"question\": \"b?\", \"n\": 1}",
    );
    let rows = load_dataset(&path, &keys(&["question"]), &LoadOptions::default()).unwrap();
    assert_eq!(numbers(&rows), [0, 1]);
    let order: Vec<&String> = rows[1].fields().keys().collect();
    assert_eq!(order, ["answer", "question", "n"]);
    assert_eq!(rows[1].input_keys(), ["question"]);
    assert_eq!(rows[1].labels(), map(json!({ "answer": "2", "n": 1 })));
}

#[test]
fn gzipped_jsonl_json_and_csv_load() {
    let dir = tempfile::tempdir().unwrap();
    let q = keys(&["q"]);
    let all = LoadOptions::default();

    let gz = write_gz(dir.path(), "dev.jsonl.gz", &numbered_jsonl(5));
    assert_eq!(
        numbers(&load_dataset(&gz, &q, &all).unwrap()),
        [0, 1, 2, 3, 4]
    );

    let array = write(
        dir.path(),
        "dev.json",
        r#"[{"q": "x", "n": 7}, {"n": 8, "q": "y"}]"#,
    );
    assert_eq!(numbers(&load_dataset(&array, &q, &all).unwrap()), [7, 8]);

    let csv = write(
        dir.path(),
        "dev.CSV",
        "q,answer,n\n\"Paris, France?\",\"say \"\"hi\"\"\",1\nplain,,2\n",
    );
    let rows = load_dataset(&csv, &q, &all).unwrap();
    assert_eq!(
        rows[0].fields(),
        &map(json!({ "q": "Paris, France?", "answer": "say \"hi\"", "n": "1" }))
    );
    assert_eq!(rows[1].get("answer"), Some(&json!("")));

    let csv_gz = write_gz(dir.path(), "dev.csv.gz", "q\nx\ny\n");
    assert_eq!(load_dataset(&csv_gz, &q, &all).unwrap().len(), 2);
}

#[test]
fn limit_and_seeded_shuffle_match_python() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rows.jsonl", &numbered_jsonl(20));
    let q = keys(&["q"]);
    let load = |limit, shuffle_seed| {
        numbers(
            &load_dataset(
                &path,
                &q,
                &LoadOptions {
                    limit,
                    shuffle_seed,
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(load(Some(3), None), [0, 1, 2]);
    assert_eq!(load(Some(0), None), Vec::<u64>::new());
    assert_eq!(load(Some(100), None).len(), 20);
    // x = list(range(20)); random.Random(2024).shuffle(x)
    assert_eq!(
        load(None, Some(2024)),
        [0, 2, 16, 1, 10, 19, 17, 18, 7, 3, 8, 4, 14, 11, 12, 13, 6, 9, 5, 15]
    );
    // x = list(range(20)); random.Random(7).shuffle(x); x[:5]
    assert_eq!(load(Some(5), Some(7)), [17, 15, 11, 18, 7]);
    assert_eq!(load(Some(5), Some(7)), load(Some(5), Some(7)));
}

#[test]
fn malformed_lines_report_their_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let q = keys(&["q"]);
    let all = LoadOptions::default();

    let bad = write(dir.path(), "bad.jsonl", "{\"q\": 1}\n\n{\"q\": 2,,}\n");
    let (line, message) = data_error(load_dataset(&bad, &q, &all));
    assert_eq!(line, 3);
    assert!(message.contains("column 9"), "{message}");
    let shown = load_dataset(&bad, &q, &all).unwrap_err().to_string();
    assert!(
        shown.contains("bad.jsonl:3: invalid JSON at column 9"),
        "{shown}"
    );

    let array_line = write(dir.path(), "list.jsonl", "{\"q\": 1}\n[1, 2]\n");
    let (line, message) = data_error(load_dataset(&array_line, &q, &all));
    assert_eq!(
        (line, message.as_str()),
        (2, "expected a JSON object, found an array")
    );

    // With a limit and no shuffle, rows past the limit are not read.
    let limited = LoadOptions {
        limit: Some(1),
        shuffle_seed: None,
    };
    assert_eq!(load_dataset(&bad, &q, &limited).unwrap().len(), 1);
}

#[test]
fn missing_input_keys_are_reported_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let all = LoadOptions::default();
    let path = write(dir.path(), "rows.jsonl", "{\"q\": 1}\n{\"question\": 2}\n");
    let (line, message) = data_error(load_dataset(&path, &keys(&["q"]), &all));
    assert_eq!((line, message.as_str()), (2, "missing input key `q`"));

    let csv = write(dir.path(), "rows.csv", "question,answer\nx,y\n");
    let (line, message) = data_error(load_dataset(&csv, &keys(&["q"]), &all));
    assert_eq!((line, message.as_str()), (2, "missing input key `q`"));

    let array = write(dir.path(), "rows.json", r#"[{"q": 1}, {"r": 2}]"#);
    let (line, message) = data_error(load_dataset(&array, &keys(&["q"]), &all));
    assert_eq!(
        (line, message.as_str()),
        (0, "element 1: missing input key `q`")
    );
}

#[test]
fn bad_csv_json_and_paths_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let all = LoadOptions::default();
    let none: Vec<String> = Vec::new();

    let ragged = write(dir.path(), "ragged.csv", "a,b\n1,2\n3\n");
    let (line, message) = data_error(load_dataset(&ragged, &none, &all));
    assert_eq!(line, 3);
    assert!(message.contains("expected 2 fields"), "{message}");

    let object = write(dir.path(), "obj.json", r#"{"q": 1}"#);
    let (_, message) = data_error(load_dataset(&object, &none, &all));
    assert!(message.contains("expected a JSON array"), "{message}");

    let broken = write(
        dir.path(),
        "broken.json",
        "[\n  {\"q\": 1},\n  {\"q\": }\n]",
    );
    let (line, _) = data_error(load_dataset(&broken, &none, &all));
    assert_eq!(line, 3);

    let unknown = write(dir.path(), "data.txt", "q\n");
    let (_, message) = data_error(load_dataset(&unknown, &none, &all));
    assert!(message.contains("unknown dataset format"), "{message}");

    let missing = dir.path().join("nope.jsonl");
    assert!(matches!(
        load_dataset(&missing, &none, &all),
        Err(Error::Io { .. })
    ));
}

/// The project's shared datasets, when this checkout sits next to them.
fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("gsm8k_dev.jsonl").is_file().then_some(dir)
}

#[test]
fn shared_datasets_load_and_score() {
    let Some(dir) = shared_data() else {
        eprintln!("skipping: ../shared/data is not present");
        return;
    };
    let all = LoadOptions::default();
    let gsm = load_dataset(&dir.join("gsm8k_dev.jsonl"), &keys(&["question"]), &all).unwrap();
    assert_eq!(gsm.len(), 919);
    // sum(parse_integer_answer(str(r["answer"])) for r in rows) in Python
    let total: u128 = gsm
        .iter()
        .map(|e| parse_integer_answer(e.get("answer").unwrap().as_str().unwrap()))
        .sum();
    assert_eq!(total, 7_808_400);
    let metric = builtin("gsm8k").unwrap();
    assert!(gsm.iter().all(|e| metric.score(e, e.fields()) == 1.0));

    // rows = [...]; random.Random(0).shuffle(rows); [r["id"] for r in rows[:3]]
    let options = LoadOptions {
        limit: Some(3),
        shuffle_seed: Some(0),
    };
    let hotpot = load_dataset(
        &dir.join("hotpotqa_dev.jsonl"),
        &keys(&["question"]),
        &options,
    )
    .unwrap();
    let ids: Vec<&str> = hotpot
        .iter()
        .map(|e| e.get("id").unwrap().as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "5a811667554299260e20a23d",
            "5adbe1a7554299438c868cc3",
            "5ab6fc8a5542991d32223714"
        ]
    );

    let csv = dir.join("dspy_fixtures/hotpotqa_conditional_dev.csv");
    let rows = load_dataset(&csv, &keys(&["question"]), &all).unwrap();
    assert_eq!(rows.len(), 200);
}

/// `eval` keeps its dataset compact: the same rows, order, values (floats,
/// nested objects, field order), input keys and errors as `load_dataset`,
/// for every format and with shuffle and limit.
#[test]
fn compact_datasets_hold_exactly_what_load_dataset_loads() {
    use dspy_rhai::data::{load_dataset_compact, Examples};
    let dir = tempfile::tempdir().unwrap();
    let q = keys(&["q"]);
    let jsonl = write(
        dir.path(),
        "rows.jsonl",
        &(0..30)
            .map(|i| {
                format!(
                    "{{\"n\": {i}, \"q\": \"question {i}?\", \"x\": 0.1, \"deep\": {{\"b\": [1, {{\"z\": null}}], \"a\": true}}}}\n"
                )
            })
            .collect::<String>(),
    );
    let array = write(
        dir.path(),
        "rows.json",
        r#"[{"q": "x", "n": 7}, {"n": 8, "q": "y"}]"#,
    );
    let csv = write(dir.path(), "rows.csv", "q,n\nx,1\n\"a, b\",2\n");
    let options = [
        LoadOptions::default(),
        LoadOptions {
            limit: Some(7),
            shuffle_seed: Some(3),
        },
        LoadOptions {
            limit: Some(1),
            shuffle_seed: None,
        },
    ];
    for path in [&jsonl, &array, &csv] {
        for opts in &options {
            let full = load_dataset(path, &q, opts).unwrap();
            let compact = load_dataset_compact(path, &q, opts).unwrap();
            assert_eq!(compact.len(), full.len(), "{}", path.display());
            for (i, example) in full.iter().enumerate() {
                let back = compact.example(i);
                assert_eq!(back.fields(), example.fields());
                let order: Vec<&String> = back.fields().keys().collect();
                let want: Vec<&String> = example.fields().keys().collect();
                assert_eq!(order, want);
                assert_eq!(back.input_keys(), ["q"]);
            }
        }
    }
    // The same error, naming the same line.
    let bad = write(dir.path(), "bad.jsonl", "{\"q\": \"x\"}\n{\"r\": 1}\n");
    let full = load_dataset(&bad, &q, &LoadOptions::default()).unwrap_err();
    let compact = load_dataset_compact(&bad, &q, &LoadOptions::default()).unwrap_err();
    assert_eq!(full.to_string(), compact.to_string());
    assert!(full.to_string().contains(":2"), "{full}");
}
