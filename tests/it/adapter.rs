//! The ChatAdapter and JSONAdapter against DSPy's exact strings
//! (expected texts from DSPy's tests/adapters/test_chat_adapter.py).

use serde_json::{json, Value};

use dspy_rhai::adapter::{
    chat, json as json_adapter, value, Adapter, AdapterKind, ChatAdapter, JsonAdapter, XmlAdapter,
    ADAPTERS,
};
use dspy_rhai::signature::{FieldType, Signature};

use crate::common::fields;

#[test]
fn simple_signature_matches_dspy_exactly() {
    let sig = Signature::parse("question -> answer")
        .unwrap()
        .with_instructions("Answer the question.");
    let msgs = chat::format(
        &sig,
        &[],
        &fields(json!({"question": "What is the capital of France?"})),
    );
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].role, "system");
    assert_eq!(
        msgs[0].content,
        "Your input fields are:\n1. `question` (str):\nYour output fields are:\n1. `answer` (str):\n\
All interactions will be structured in the following way, with the appropriate values filled in.\n\n\
[[ ## question ## ]]\n{question}\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]\n\
In adhering to this structure, your objective is: \n        Answer the question."
    );
    assert_eq!(msgs[1].role, "user");
    assert_eq!(
        msgs[1].content,
        "[[ ## question ## ]]\nWhat is the capital of France?\n\n\
Respond with the corresponding output fields, starting with the field `[[ ## answer ## ]]`, \
and then ending with the marker for `[[ ## completed ## ]]`."
    );
}

#[test]
fn typed_outputs_and_a_demo_match_dspy_exactly() {
    let sig = Signature::parse("question -> answers: list[str], scores: list[float]")
        .unwrap()
        .with_instructions("Answer the question with multiple answers and scores");
    let demo = fields(json!({"question": "Q1", "answers": ["A1", "A2"], "scores": [0.1, 0.9]}));
    let msgs = chat::format(&sig, &[&demo], &fields(json!({"question": "Q2"})));
    assert_eq!(
        msgs[0].content,
        "Your input fields are:\n1. `question` (str):\nYour output fields are:\n\
1. `answers` (list[str]): \n2. `scores` (list[float]):\n\
All interactions will be structured in the following way, with the appropriate values filled in.\n\n\
[[ ## question ## ]]\n{question}\n\n\
[[ ## answers ## ]]\n{answers}        # note: the value you produce must adhere to the JSON schema: {\"type\": \"array\", \"items\": {\"type\": \"string\"}}\n\n\
[[ ## scores ## ]]\n{scores}        # note: the value you produce must adhere to the JSON schema: {\"type\": \"array\", \"items\": {\"type\": \"number\"}}\n\n\
[[ ## completed ## ]]\n\
In adhering to this structure, your objective is: \n        Answer the question with multiple answers and scores"
    );
    assert_eq!(msgs[1].content, "[[ ## question ## ]]\nQ1");
    assert_eq!(
        msgs[2].content,
        "[[ ## answers ## ]]\n[\"A1\", \"A2\"]\n\n[[ ## scores ## ]]\n[0.1, 0.9]\n\n[[ ## completed ## ]]\n"
    );
    assert_eq!(
        msgs[3].content,
        "[[ ## question ## ]]\nQ2\n\nRespond with the corresponding output fields, starting with the field \
`[[ ## answers ## ]]` (must be formatted as a valid Python list[str]), then `[[ ## scores ## ]]` \
(must be formatted as a valid Python list[float]), and then ending with the marker for `[[ ## completed ## ]]`."
    );
}

#[test]
fn incomplete_demos_come_first_with_dspy_wording() {
    let sig = Signature::parse("question, context -> answer, confidence: float").unwrap();
    let complete =
        fields(json!({"question": "Q0", "context": "C0", "answer": "A0", "confidence": 0.5}));
    let incomplete = fields(json!({"question": "Q1", "answer": "A1"}));
    let useless = fields(json!({"question": "Q9"}));
    let msgs = chat::format(
        &sig,
        &[&complete, &incomplete, &useless],
        &fields(json!({"question": "Q2", "context": "C2"})),
    );
    assert_eq!(msgs.len(), 6, "the demo with no output is dropped");
    assert!(msgs[0].content.contains(
        "[[ ## confidence ## ]]\n{confidence}        # note: the value you produce must be a single float value"
    ));
    assert!(msgs[0].content.ends_with(
        "your objective is: \n        Given the fields `question`, `context`, produce the fields `answer`, `confidence`."
    ));
    assert_eq!(
        msgs[1].content,
        "This is an example of the task, though some input or output fields are not supplied.\n\n[[ ## question ## ]]\nQ1"
    );
    assert_eq!(
        msgs[2].content,
        "[[ ## answer ## ]]\nA1\n\n[[ ## confidence ## ]]\nNot supplied for this particular example.\n\n[[ ## completed ## ]]\n"
    );
    assert_eq!(
        msgs[3].content,
        "[[ ## question ## ]]\nQ0\n\n[[ ## context ## ]]\nC0"
    );
    assert_eq!(
        msgs[5].content,
        "[[ ## question ## ]]\nQ2\n\n[[ ## context ## ]]\nC2\n\n\
Respond with the corresponding output fields, starting with the field `[[ ## answer ## ]]`, then \
`[[ ## confidence ## ]]` (must be formatted as a valid Python float), and then ending with the marker for `[[ ## completed ## ]]`."
    );
}

#[test]
fn list_inputs_are_numbered_blobs() {
    let ty = FieldType::Str;
    assert_eq!(value::format_value(&ty, &json!([])), "N/A");
    assert_eq!(value::format_value(&ty, &json!(["one"])), "«one»");
    assert_eq!(
        value::format_value(&ty, &json!(["a | b", "two\nlines"])),
        "[1] «a | b»\n[2] «««\n    two\n    lines\n»»»"
    );
    assert_eq!(value::format_value(&ty, &json!(true)), "True");
    assert_eq!(value::format_value(&ty, &json!(3.0)), "3.0");
    assert_eq!(
        value::format_value(&ty, &json!({"a": [1, 2]})),
        "{\"a\": [1, 2]}"
    );
}

#[test]
fn parses_well_formed_reordered_and_inline_replies() {
    let sig = Signature::parse("question -> reasoning, answer: int").unwrap();
    let ok = chat::parse(
        &sig,
        "[[ ## reasoning ## ]]\nTwo plus two.\n\n[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]",
    )
    .unwrap();
    assert_eq!(ok["reasoning"], "Two plus two.");
    assert_eq!(ok["answer"], 4);

    let reordered = chat::parse(
        &sig,
        "  [[ ## answer ## ]] 4\n[[ ## reasoning ## ]]\nbecause",
    )
    .unwrap();
    assert_eq!(reordered["answer"], 4);
    assert_eq!(reordered["reasoning"], "because");
    let keys: Vec<&String> = reordered.keys().collect();
    assert_eq!(keys, ["reasoning", "answer"], "signature order is kept");
}

#[test]
fn first_occurrence_wins_and_unknown_sections_are_ignored() {
    let sig = Signature::parse("q -> answer").unwrap();
    let parsed = chat::parse(
        &sig,
        "preamble\n[[ ## thoughts ## ]]\nhmm\n[[ ## answer ## ]]\nfirst\n[[ ## answer ## ]]\nsecond",
    )
    .unwrap();
    assert_eq!(parsed["answer"], "first");
}

#[test]
fn missing_fields_and_junk_are_errors_that_keep_the_raw_text() {
    let sig = Signature::parse("q -> reasoning, answer").unwrap();
    let err = chat::parse(&sig, "[[ ## reasoning ## ]]\nonly this").unwrap_err();
    assert!(
        err.message.contains("`answer` is missing"),
        "{}",
        err.message
    );
    assert_eq!(err.raw, "[[ ## reasoning ## ]]\nonly this");
    let err = chat::parse(&sig, "I am a teapot").unwrap_err();
    assert!(err.to_string().contains("I am a teapot"));
}

#[test]
fn typed_values_convert_or_fail() {
    let sig = Signature::parse("q -> n: int, ok: bool, xs: list[str], m: dict").unwrap();
    let parsed = chat::parse(
        &sig,
        "[[ ## n ## ]]\n1,234\n[[ ## ok ## ]]\nTrue\n[[ ## xs ## ]]\n['a', 'b']\n[[ ## m ## ]]\n{\"k\": 1}",
    )
    .unwrap();
    assert_eq!(parsed["n"], 1234);
    assert_eq!(parsed["ok"], true);
    assert_eq!(parsed["xs"], json!(["a", "b"]));
    assert_eq!(parsed["m"], json!({"k": 1}));
    let err = chat::parse(
        &sig,
        "[[ ## n ## ]]\nmany\n[[ ## ok ## ]]\nyes\n[[ ## xs ## ]]\n[]\n[[ ## m ## ]]\n{}",
    )
    .unwrap_err();
    assert!(err.message.contains("field `n`"), "{}", err.message);
}

#[test]
fn json_adapter_formats_and_parses() {
    let sig = Signature::parse("question -> answer, n: int").unwrap();
    let msgs = json_adapter::format(&sig, &[], &fields(json!({"question": "Q"})));
    assert!(msgs[0]
        .content
        .contains("Inputs will have the following structure:"));
    assert!(msgs[0].content.contains(
        "Outputs will be a JSON object with the following fields.\n\n{\n  \"answer\": \"{answer}\",\n  \"n\": \"{n}        # note: the value you produce must be a single int value\"\n}"
    ));
    assert!(msgs[1].content.ends_with(
        "Respond with a JSON object in the following order of fields: `answer`, then `n` (must be formatted as a valid Python int)."
    ));
    let parsed =
        json_adapter::parse(&sig, "Sure! {\"answer\": \"Paris\", \"n\": \"3\"} done").unwrap();
    assert_eq!(parsed["answer"], "Paris");
    assert_eq!(parsed["n"], 3);
    assert!(json_adapter::parse(&sig, "{\"answer\": \"x\"}").is_err());
    assert!(json_adapter::parse(&sig, "no json here").is_err());
}

#[test]
fn reply_round_trips_through_the_parser() {
    let sig = Signature::parse("q -> answer, score: float").unwrap();
    let out = fields(json!({"answer": "multi\nline", "score": 0.5}));
    assert_eq!(chat::parse(&sig, &crate::common::reply(&out)).unwrap(), out);
}

#[test]
fn literal_outputs_match_dspy_exactly_and_parse_strictly() {
    let sig = Signature::parse("question -> verdict: Literal['yes', 'no']").unwrap();
    let msgs = chat::format(&sig, &[], &fields(json!({"question": "Is the sky blue?"})));
    assert_eq!(
        msgs[0].content,
        "Your input fields are:\n1. `question` (str):\nYour output fields are:\n\
1. `verdict` (Literal['yes', 'no']):\n\
All interactions will be structured in the following way, with the appropriate values filled in.\n\n\
[[ ## question ## ]]\n{question}\n\n\
[[ ## verdict ## ]]\n{verdict}        # note: the value you produce must exactly match (no extra characters) one of: yes; no\n\n\
[[ ## completed ## ]]\n\
In adhering to this structure, your objective is: \n        Given the fields `question`, produce the fields `verdict`."
    );
    assert_eq!(
        msgs[1].content,
        "[[ ## question ## ]]\nIs the sky blue?\n\nRespond with the corresponding output fields, starting with the field \
`[[ ## verdict ## ]]` (must be formatted as a valid Python Literal['yes', 'no']), and then ending with the marker for `[[ ## completed ## ]]`."
    );
    for reply in ["yes", " 'yes' ", "Literal['yes']", "\"yes\""] {
        let parsed = chat::parse(&sig, &format!("[[ ## verdict ## ]]\n{reply}")).unwrap();
        assert_eq!(parsed["verdict"], "yes", "{reply}");
    }
    let err = chat::parse(&sig, "[[ ## verdict ## ]]\nmaybe").unwrap_err();
    assert!(
        err.message.contains("not one of yes; no"),
        "{}",
        err.message
    );
    assert_eq!(
        json_adapter::parse(&sig, "{\"verdict\": \"no\"}").unwrap()["verdict"],
        "no"
    );
    let odd = Signature::parse(r#"q -> v: Literal["it's", "x"]"#).unwrap();
    assert_eq!(odd.outputs()[0].ty.to_string(), r#"Literal["it's", 'x']"#);
}

/// DSPy 3.4.1's `XMLAdapter().format(...)` for this signature, demo and
/// incomplete demo, printed by Python DSPy (nested `<item>` lists, escaped
/// `str` outputs, typed Literal members).
#[test]
fn xml_adapter_matches_dspy_exactly() {
    let sig = Signature::parse(
        "question, ctx: list[str] -> answer, scores: list[float], rating: Literal[1, 2, 3], ok: bool",
    )
    .unwrap()
    .with_instructions("Answer with scores.");
    let demo = fields(
        json!({"question": "Q1", "ctx": ["a", "b"], "answer": "A & <b>",
                             "scores": [0.5, 1.0], "rating": 2, "ok": true}),
    );
    let incomplete = fields(json!({"question": "Q0", "answer": "x"}));
    let msgs = XmlAdapter.format(
        &sig,
        &[&demo, &incomplete],
        &fields(json!({"question": "Q2", "ctx": ["c"]})),
    );
    let expected = [
        ("system", "Your input fields are:\n1. `question` (str): \n2. `ctx` (list[str]):\nYour output fields are:\n1. `answer` (str): \n2. `scores` (list[float]): \n3. `rating` (Literal[1, 2, 3]): \n4. `ok` (bool):\nAll interactions will be structured in the following way, with the appropriate values filled in.\n\n<question>\n{question}\n</question>\n\n<ctx>\n{ctx}\n</ctx>\n\n<answer>\n{answer}\n</answer>\n\n<scores><item>...</item></scores>\n\n<rating>\n{rating}        # note: the value you produce must exactly match (no extra characters) one of: 1; 2; 3\n</rating>\n\n<ok>\n{ok}        # note: the value you produce must be True or False\n</ok>\nIn adhering to this structure, your objective is: \n        Answer with scores."),
        ("user", "This is an example of the task, though some input or output fields are not supplied.\n\n<question>\nQ0\n</question>"),
        ("assistant", "<answer>\nx\n</answer>\n\n<scores>\nNot supplied for this particular example. \n</scores>\n\n<rating>\nNot supplied for this particular example. \n</rating>\n\n<ok>\nNot supplied for this particular example. \n</ok>"),
        ("user", "<question>\nQ1\n</question>\n\n<ctx>\n[\"a\", \"b\"]\n</ctx>"),
        ("assistant", "<answer>\nA &amp; &lt;b>\n</answer>\n\n<scores><item>0.5</item><item>1.0</item></scores>\n\n<rating>\n2\n</rating>\n\n<ok>\nTrue\n</ok>"),
        ("user", "<question>\nQ2\n</question>\n\n<ctx>\n[\"c\"]\n</ctx>\n\nRespond with the corresponding output fields wrapped in XML tags `<answer>`, then `<scores>`, then `<rating>`, then `<ok>`. Use this nested XML structure: <scores><item>...</item></scores>"),
    ];
    assert_eq!(msgs.len(), expected.len());
    for (m, (role, content)) in msgs.iter().zip(expected) {
        assert_eq!(m.role, role);
        assert_eq!(m.content, content);
    }
    // The demo's own answer parses back to the same typed values.
    let parsed = XmlAdapter.parse(&sig, &msgs[4].content).unwrap();
    assert_eq!(
        Value::Object(parsed),
        json!({"answer": "A & <b>", "scores": [0.5, 1.0], "rating": 2, "ok": true})
    );
}

#[test]
fn xml_parsing_forgives_what_a_strict_parser_would_not() {
    let sig = Signature::parse("q -> reasoning, answer: int, tags: list[str]").unwrap();
    // A stray `&` and `<` in the reasoning, prose around the elements, a
    // JSON list instead of <item>s, and an entity in the answer.
    let reply = "Sure!\n<reasoning>\n2 < 3 & so on\n</reasoning>\n<answer>&#52;2</answer>\n<tags>[\"a\", \"b\"]</tags>\nThanks";
    let parsed = XmlAdapter.parse(&sig, reply).unwrap();
    assert_eq!(parsed["reasoning"], "2 < 3 & so on");
    assert_eq!(parsed["answer"], 42);
    assert_eq!(parsed["tags"], json!(["a", "b"]));
    // Empty and self-closing lists, and `<item />` as None.
    let parsed = XmlAdapter
        .parse(&sig, "<reasoning>r</reasoning><answer>1</answer><tags />")
        .unwrap();
    assert_eq!(parsed["tags"], json!([]));
    let parsed = XmlAdapter
        .parse(
            &sig,
            "<reasoning>r</reasoning><answer>1</answer><tags><item>x</item><item /></tags>",
        )
        .unwrap();
    assert_eq!(parsed["tags"], json!(["x", null]));
    // An element cut off before its closing tag is missing, not guessed.
    let err = XmlAdapter
        .parse(
            &sig,
            "<reasoning>r</reasoning><answer>1</answer><tags><item>x</item>",
        )
        .unwrap_err();
    assert!(err.message.contains("`tags` is missing"), "{}", err.message);
    assert_eq!(err.adapter, "XMLAdapter");
    // A wrong type names field, type and text.
    let err = XmlAdapter
        .parse(&sig, "<reasoning>r</reasoning><answer>many</answer><tags/>")
        .unwrap_err();
    assert!(
        err.message
            .contains("field `answer`: expected int, got \"many\" (not an integer)"),
        "{}",
        err.message
    );
}

#[test]
fn json_adapter_asks_for_structured_outputs_like_dspy() {
    // DSPy's `_get_structured_outputs_response_format(S).model_json_schema()`
    // for these fields, without pydantic's `title`s.
    let sig = Signature::parse(
        "question -> answer, scores: list[float], rating: Literal[1, 2, 3], ok: bool",
    )
    .unwrap();
    assert_eq!(
        json_adapter::response_schema(&sig).unwrap(),
        json!({"type": "object", "properties": {
            "answer": {"type": "string"},
            "scores": {"type": "array", "items": {"type": "number"}},
            "rating": {"type": "integer", "enum": [1, 2, 3]},
            "ok": {"type": "boolean"}},
            "required": ["answer", "scores", "rating", "ok"],
            "additionalProperties": false})
    );
    // An open-ended dict cannot be a structured output: json_object instead.
    let open = Signature::parse("q -> meta: dict").unwrap();
    assert_eq!(json_adapter::response_schema(&open), None);
    let mut request = dspy_rhai::lm::LmRequest {
        model: "m".into(),
        messages: vec![],
        temperature: None,
        max_tokens: None,
        n: 1,
        json_mode: false,
        response_schema: None,
        rollout_id: None,
    };
    JsonAdapter.prepare(&open, &mut request);
    assert!(request.json_mode);
    assert_eq!(request.response_schema, None);
    ChatAdapter.prepare(&sig, &mut request);
    assert_eq!(
        request.response_schema, None,
        "the ChatAdapter changes nothing"
    );
}

#[test]
fn adapter_names_and_fallback_chains_are_data() {
    assert_eq!("xml".parse::<AdapterKind>().unwrap(), AdapterKind::Xml);
    assert_eq!(
        "JSONAdapter".parse::<AdapterKind>().unwrap(),
        AdapterKind::Json
    );
    assert_eq!(
        "yaml".parse::<AdapterKind>().unwrap_err(),
        "unknown adapter `yaml` (known: chat, json, xml)"
    );
    assert_eq!(
        AdapterKind::Chat.chain(),
        [AdapterKind::Chat, AdapterKind::Json]
    );
    assert_eq!(
        AdapterKind::Xml.chain(),
        [AdapterKind::Xml, AdapterKind::Json]
    );
    assert_eq!(AdapterKind::Json.chain(), [AdapterKind::Json]);
    for kind in ADAPTERS {
        assert_eq!(kind.as_str().parse::<AdapterKind>().unwrap(), kind);
        assert_eq!(
            kind.adapter().name().to_lowercase(),
            format!("{kind}adapter")
        );
    }
}
