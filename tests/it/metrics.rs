//! Built-in metrics against DSPy's own Python functions: every expected
//! value below was produced by running `dspy/evaluate/metrics.py`,
//! `dspy/dsp/utils/dpr.py` and `dspy/datasets/gsm8k.py` on the same input.

use dspy_rhai::data::Example;
use dspy_rhai::evaluate::metrics::{
    answer_exact_match, answer_passage_match, builtin, exact_match, f1_score,
    gold_passages_retrieved, gsm8k_metric, hotpot_f1_score, names, normalize_text,
    parse_integer_answer, BuiltinMetric,
};
use serde_json::{json, Map, Value};

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text).unwrap() {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn example(value: Value) -> Example {
    match value {
        Value::Object(map) => Example::new(map),
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn normalize_text_matches_dspy() {
    let cases = [
        ("The Eiffel Tower!", "eiffel tower"),
        (
            "  a  Man, a Plan, an Canal: Panama ",
            "man plan canal panama",
        ),
        ("Thé café", "\u{301} cafe\u{301}"),
        ("thé", "\u{301}"),
        ("Café", "cafe\u{301}"),
        ("ÉCOLE", "e\u{301}cole"),
        ("東京タワー", "東京タワー"),
        ("ＡＢＣ１２３", "ａｂｃ１２３"),
        ("theory then a. b", "theory then b"),
        ("the_cat", "thecat"),
        ("rock-n-roll", "rocknroll"),
        ("It's 5 o'clock", "its 5 oclock"),
        ("A", ""),
        ("", ""),
        ("   ", ""),
        ("Ωmega Σ", "ωmega σ"),
        ("x\u{1c}y", "x y"),
        ("naïve an", "nai\u{308}ve"),
        ("\u{201c}Quoted\u{201d} text", "\u{201c}quoted\u{201d} text"),
        ("an\u{2014}the", "\u{2014}"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalize_text(input), expected, "normalize_text({input:?})");
    }
}

#[test]
fn exact_match_and_f1_match_dspy() {
    // (prediction, gold, em_score, f1_score, hotpot_f1_score)
    let cases: [(&str, &str, bool, f64, f64); 17] = [
        ("The Eiffel Tower", "eiffel tower", true, 1.0, 1.0),
        (
            "Paris",
            "Paris, France",
            false,
            0.6666666666666666,
            0.6666666666666666,
        ),
        ("", "", true, 0.0, 0.0),
        ("the", "", true, 0.0, 0.0),
        ("café", "cafe", false, 0.0, 0.0),
        ("Café", "CAFÉ", true, 1.0, 1.0),
        ("yes", "no", false, 0.0, 0.0),
        ("yes", "yes", true, 1.0, 1.0),
        ("no", "No.", true, 1.0, 1.0),
        ("noanswer", "no answer", false, 0.0, 0.0),
        (
            "Eiffel Tower is in Paris",
            "Paris",
            false,
            0.33333333333333337,
            0.33333333333333337,
        ),
        ("the cat the cat", "cat cat cat", false, 0.8, 0.8),
        ("New York City", "new york", false, 0.8, 0.8),
        (
            "東京 タワー",
            "東京",
            false,
            0.6666666666666666,
            0.6666666666666666,
        ),
        ("１８", "18", false, 0.0, 0.0),
        ("a b c", "c b a", false, 1.0, 1.0),
        ("yes it is", "yes", false, 0.5, 0.0),
    ];
    for (pred, gold, em, f1, hotpot) in cases {
        assert_eq!(exact_match(pred, gold), em, "em({pred:?}, {gold:?})");
        assert_eq!(f1_score(pred, gold), f1, "f1({pred:?}, {gold:?})");
        assert_eq!(
            hotpot_f1_score(pred, gold),
            hotpot,
            "hotpot_f1({pred:?}, {gold:?})"
        );
    }
}

#[test]
fn parse_integer_answer_matches_dspy() {
    let cases = [
        ("18", 18),
        ("18.0", 18),
        ("The answer is $1,234.", 1234),
        ("-5", 5),
        ("3.14 and 2.71", 2),
        ("no digits", 0),
        ("", 0),
        ("  \u{a}42", 42),
        ("7\u{a}8", 7),
        (".5", 0),
        ("１８", 18),
        ("50 m²", 0),
        ("abc123def", 123),
        ("Total: 1,000,000 dollars", 1000000),
        ("It costs $18.00 total", 18),
        ("x 12 y", 12),
        ("0", 0),
        ("£7.50 each", 7),
        ("5-3", 53),
        ("1e3", 13),
    ];
    for (input, expected) in cases {
        assert_eq!(
            parse_integer_answer(input),
            expected,
            "parse_integer_answer({input:?})"
        );
    }
}

/// One example/prediction pair and what DSPy's metrics say about it.
struct Case {
    example: &'static str,
    pred: &'static str,
    /// `answer_exact_match(example, pred)`
    em: bool,
    /// `answer_exact_match(example, pred, frac=0.5)`
    em_half: bool,
    /// `max(f1_score(pred.answer, a) for a in answers)`
    f1: f64,
    /// the same with `hotpot_f1_score`
    hotpot: f64,
    /// `answer_passage_match(example, pred)`
    passage: bool,
}

const CASES: &[Case] = &[
    Case {
        example: r#"{"answer": "Eiffel Tower"}"#,
        pred: r#"{"answer": "The Eiffel Tower!", "context": ["Eiffel Tower | The Eiffel Tower is in Paris.", "Louvre | A museum."]}"#,
        em: true,
        em_half: true,
        f1: 1.0,
        hotpot: 1.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": ["Louvre", "Eiffel Tower"]}"#,
        pred: r#"{"answer": "the louvre", "context": ["Louvre Museum | The Louvre, in Paris."]}"#,
        em: true,
        em_half: true,
        f1: 1.0,
        hotpot: 1.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": ["Paris, France"]}"#,
        pred: r#"{"answer": "Paris", "context": ["France | Its capital is paris, france."]}"#,
        em: false,
        em_half: true,
        f1: 0.6666666666666666,
        hotpot: 0.6666666666666666,
        passage: true,
    },
    Case {
        example: r#"{"answer": "New York City"}"#,
        pred: r#"{"answer": "new york", "context": ["NYC | New York is big. City life."]}"#,
        em: false,
        em_half: true,
        f1: 0.8,
        hotpot: 0.8,
        passage: false,
    },
    Case {
        example: r#"{"answer": "café"}"#,
        pred: r#"{"answer": "Café", "context": ["Paris | A CAFÉ on the corner."]}"#,
        em: true,
        em_half: true,
        f1: 1.0,
        hotpot: 1.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": "café"}"#,
        pred: r#"{"answer": "cafe", "context": ["Paris | a cafe on the corner"]}"#,
        em: false,
        em_half: false,
        f1: 0.0,
        hotpot: 0.0,
        passage: false,
    },
    Case {
        example: r#"{"answer": "yes"}"#,
        pred: r#"{"answer": "yes it is", "context": ["Q | yes"]}"#,
        em: false,
        em_half: true,
        f1: 0.5,
        hotpot: 0.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": "東京"}"#,
        pred: r#"{"answer": "東京 タワー", "context": ["Japan | 東京タワーは高い"]}"#,
        em: false,
        em_half: true,
        f1: 0.6666666666666666,
        hotpot: 0.6666666666666666,
        passage: false,
    },
    Case {
        example: r#"{"answer": "東京"}"#,
        pred: r#"{"answer": "東京", "context": ["Japan | 東京 タワー は 高い"]}"#,
        em: true,
        em_half: true,
        f1: 1.0,
        hotpot: 1.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": "18"}"#,
        pred: r#"{"answer": "The answer is 18.0", "context": ["Math | 18 apples"]}"#,
        em: false,
        em_half: false,
        f1: 0.0,
        hotpot: 0.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": "1,234"}"#,
        pred: r#"{"answer": "$1,234", "context": ["Money | It cost $1,234 in total."]}"#,
        em: true,
        em_half: true,
        f1: 1.0,
        hotpot: 1.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": ""}"#,
        pred: r#"{"answer": "", "context": ["Anything | here"]}"#,
        em: true,
        em_half: false,
        f1: 0.0,
        hotpot: 0.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": "the"}"#,
        pred: r#"{"answer": "a", "context": ["X | y"]}"#,
        em: true,
        em_half: false,
        f1: 0.0,
        hotpot: 0.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": "rock-n-roll"}"#,
        pred: r#"{"answer": "Rock n roll", "context": ["Music | Rock-n-roll hall of fame"]}"#,
        em: false,
        em_half: false,
        f1: 0.0,
        hotpot: 0.0,
        passage: true,
    },
    Case {
        example: r#"{"answer": "Dr. Who"}"#,
        pred: r#"{"answer": "dr who", "context": ["TV | doctor who"]}"#,
        em: true,
        em_half: true,
        f1: 1.0,
        hotpot: 1.0,
        passage: false,
    },
];

#[test]
fn example_level_metrics_match_dspy() {
    let em = builtin("answer_exact_match").unwrap();
    let f1 = builtin("f1").unwrap();
    let hotpot = builtin("hotpot_f1").unwrap();
    let passage = builtin("answer_passage_match").unwrap();
    for case in CASES {
        let ex = Example::new(object(case.example));
        let pred = object(case.pred);
        let what = format!("{} / {}", case.example, case.pred);
        assert_eq!(answer_exact_match(&ex, &pred, 1.0), case.em, "em: {what}");
        assert_eq!(
            answer_exact_match(&ex, &pred, 0.5),
            case.em_half,
            "em frac 0.5: {what}"
        );
        assert_eq!(
            answer_passage_match(&ex, &pred),
            case.passage,
            "passage: {what}"
        );
        assert_eq!(em.score(&ex, &pred), f64::from(u8::from(case.em)), "{what}");
        assert_eq!(f1.score(&ex, &pred), case.f1, "f1: {what}");
        assert_eq!(hotpot.score(&ex, &pred), case.hotpot, "hotpot f1: {what}");
        assert_eq!(
            passage.score(&ex, &pred),
            f64::from(u8::from(case.passage)),
            "{what}"
        );
    }
}

#[test]
fn gold_passages_retrieved_matches_dspy() {
    // (gold_titles, context, DSPy's result)
    let cases = [
        (
            r#"["Eiffel Tower", "Paris"]"#,
            r#"["Eiffel Tower | tall", "paris | city", "Other | x"]"#,
            true,
        ),
        (
            r#"["Eiffel Tower", "Paris"]"#,
            r#"["The Eiffel Tower | tall"]"#,
            false,
        ),
        (r#"["The Beatles"]"#, r#"["Beatles | band"]"#, true),
        (r#"["Café de Flore"]"#, r#"["cafe de flore | x"]"#, false),
        (r#"["Café de Flore"]"#, r#"["CAFÉ DE FLORE! | x"]"#, true),
        (r#"[]"#, r#"["Anything | x"]"#, true),
        (r#"["A | B"]"#, r#"["A | B | C"]"#, false),
        (r#"["Title"]"#, r#"["Title"]"#, true),
    ];
    for (gold, context, expected) in cases {
        let ex = example(json!({ "gold_titles": serde_json::from_str::<Value>(gold).unwrap() }));
        let pred = object(&format!(r#"{{"context": {context}}}"#));
        assert_eq!(
            gold_passages_retrieved(&ex, &pred),
            expected,
            "{gold} in {context}"
        );
    }
}

#[test]
fn gsm8k_metric_compares_final_integers() {
    let gsm = builtin("gsm8k").unwrap();
    assert_eq!(builtin("gsm8k_metric"), Some(gsm));
    // (gold answer, predicted answer, DSPy's gsm8k_metric)
    let cases = [
        (json!(18), json!("18.0"), true),
        (json!(18.0), json!("18"), true),
        (json!("18"), json!("The answer is $18."), true),
        (json!("18"), json!("19"), false),
        (json!("1234"), json!("Total: $1,234"), true),
        (json!(-3), json!("3"), true),
        (json!("0"), json!("no idea"), true),
        (json!("72"), json!("So 70 + 2 = 72\nThen 5"), true),
        (json!("5"), json!("So 70 + 2 = 72\nThen 5"), false),
        (json!("18"), json!("１８"), true),
    ];
    for (gold, answer, expected) in cases {
        let ex = example(json!({ "question": "q", "answer": gold }));
        let pred = object(&json!({ "answer": answer }).to_string());
        assert_eq!(gsm8k_metric(&ex, &pred), expected, "{ex:?} vs {pred:?}");
        assert_eq!(gsm.score(&ex, &pred), f64::from(u8::from(expected)));
    }
}

#[test]
fn missing_or_odd_fields_score_zero_without_panicking() {
    let ex = example(json!({ "answer": "Paris", "gold_titles": ["Paris"] }));
    let empty = Map::new();
    let null = object(r#"{"answer": null, "context": null}"#);
    for name in names() {
        let metric = builtin(name).unwrap();
        assert_eq!(metric.score(&ex, &empty), 0.0, "{name} with no fields");
        assert_eq!(metric.score(&ex, &null), 0.0, "{name} with null fields");
        assert_eq!(
            metric.score(&example(json!({})), &empty),
            0.0,
            "{name} on empty example"
        );
    }
    // An empty list of acceptable answers matches nothing (DSPy raises).
    let no_answers = example(json!({ "answer": [] }));
    assert!(!answer_exact_match(
        &no_answers,
        &object(r#"{"answer": "x"}"#),
        1.0
    ));
    // A single string context is one passage (DSPy would iterate its characters).
    let pred = object(r#"{"context": "Paris | Paris is the capital."}"#);
    assert!(answer_passage_match(&ex, &pred));
    assert!(gold_passages_retrieved(&ex, &pred));
}

#[test]
fn registry_knows_its_names() {
    assert_eq!(
        builtin("exact_match"),
        Some(BuiltinMetric::AnswerExactMatch { frac: 1.0 })
    );
    assert_eq!(builtin("nope"), None);
    for name in [
        "answer_exact_match",
        "exact_match",
        "f1",
        "answer_passage_match",
        "gold_passages_retrieved",
        "gsm8k",
        "gsm8k_metric",
    ] {
        assert!(names().contains(&name), "{name} listed");
        assert!(builtin(name).is_some(), "{name} resolves");
    }
}

#[test]
fn answer_exact_match_with_fraction_uses_f1_threshold() {
    let ex = example(json!({ "answer": ["Eiffel Tower", "Louvre"] }));
    let pred = object(r#"{"answer": "The Eiffel Tower, Paris"}"#);
    // F1 = 0.8 against "Eiffel Tower" (DSPy: False, True, False).
    assert!(!answer_exact_match(&ex, &pred, 1.0));
    assert!(answer_exact_match(&ex, &pred, 0.8));
    assert!(!answer_exact_match(&ex, &pred, 0.81));
    let loose = BuiltinMetric::AnswerExactMatch { frac: 0.5 };
    assert_eq!(loose.score(&ex, &pred), 1.0);
}
