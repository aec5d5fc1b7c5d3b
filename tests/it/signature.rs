//! Signature parsing and immutable builders.

use dspy_rhai::signature::{Field, FieldType, Signature};

#[test]
fn parses_names_and_types() {
    let sig = Signature::parse(
        "question: str, k: int -> answers: list[str], confident: bool, score: float, meta: dict",
    )
    .unwrap();
    let types: Vec<(String, FieldType)> = sig
        .fields()
        .map(|f| (f.name.clone(), f.ty.clone()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("question".into(), FieldType::Str),
            ("k".into(), FieldType::Int),
            ("answers".into(), FieldType::List(Box::new(FieldType::Str))),
            ("confident".into(), FieldType::Bool),
            ("score".into(), FieldType::Float),
            ("meta".into(), FieldType::Dict),
        ]
    );
    assert_eq!(
        sig.instructions(),
        "Given the fields `question`, `k`, produce the fields `answers`, `confident`, `score`, `meta`."
    );
    assert_eq!(
        sig.to_string(),
        "question, k: int -> answers: list[str], confident: bool, score: float, meta: dict"
    );
}

#[test]
fn nested_list_types_parse() {
    let sig = Signature::parse("a -> b: list[list[int]], c: list[dict]").unwrap();
    assert_eq!(sig.outputs()[0].ty.to_string(), "list[list[int]]");
    assert_eq!(sig.outputs()[1].ty.to_string(), "list[dict]");
}

#[test]
fn invalid_signatures_quote_the_text() {
    let cases = [
        ("question answer", "no `->`"),
        ("a -> b -> c", "more than one `->`"),
        ("a, a -> b", "declared twice"),
        ("a -> a", "both an input and an output"),
        ("a: tensor -> b", "unknown type `tensor`"),
        ("a -> ", "no output fields"),
        ("a, -> b", "empty field name"),
        ("my-field -> b", "not a valid field name"),
    ];
    for (text, reason) in cases {
        let err = Signature::parse(text).unwrap_err().to_string();
        assert!(err.contains(&format!("\"{text}\"")), "{text}: {err}");
        assert!(err.contains(reason), "{text}: {err}");
    }
}

#[test]
fn builders_return_new_values() {
    let base = Signature::parse("question -> answer").unwrap();
    let cot = base
        .prepend_output(Field::new("reasoning", FieldType::Str))
        .unwrap();
    assert_eq!(base.to_string(), "question -> answer");
    assert_eq!(cot.to_string(), "question -> reasoning, answer");
    let instructed = base.with_instructions("Answer briefly.");
    assert_eq!(instructed.instructions(), "Answer briefly.");
    assert!(!base.has_custom_instructions());
    let described = base.with_desc("answer", "a short phrase").unwrap();
    assert_eq!(
        described.outputs()[0].desc.as_deref(),
        Some("a short phrase")
    );
    assert!(base.with_desc("nope", "x").is_err());
    assert!(base
        .append_output(Field::new("question", FieldType::Str))
        .is_err());
    assert_eq!(
        base.append_input(Field::new("context", FieldType::Str))
            .unwrap()
            .to_string(),
        "question, context -> answer"
    );
}

#[test]
fn field_prefix_matches_dspy() {
    assert_eq!(Field::new("question", FieldType::Str).prefix(), "Question:");
    assert_eq!(
        Field::new("search_query", FieldType::Str).prefix(),
        "Search Query:"
    );
}
