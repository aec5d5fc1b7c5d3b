//! Every error variant renders its chain with each piece of text once
//! (issue 13 item 7): `{:#}` of the error, and the CLI's rendering after
//! `anyhow` context layers.

use std::path::PathBuf;
use std::time::Duration;

use dspy_rhai::adapter::ParseError;
use dspy_rhai::lm::LmError;
use dspy_rhai::retrieve::RetrieveError;
use dspy_rhai::signature::Signature;
use dspy_rhai::Error;

fn io() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
}

/// One value of every variant of [`LmError`].
fn lm_errors() -> Vec<LmError> {
    vec![
        LmError::NotConfigured,
        LmError::Config("model string \"x\" should look like provider/name".into()),
        LmError::Http {
            status: 500,
            body: "upstream failed".into(),
        },
        LmError::Timeout {
            url: "http://127.0.0.1:8000/v1/chat/completions".into(),
            after: Duration::from_secs(3),
            reply_bytes: None,
        },
        LmError::Connect("connection refused".into()),
        LmError::BadResponse("no choices".into()),
        LmError::RetriesExhausted {
            attempts: 4,
            last: Box::new(LmError::Timeout {
                url: "http://127.0.0.1:8000/v1/chat/completions".into(),
                after: Duration::from_secs(1),
                reply_bytes: Some(512),
            }),
        },
        LmError::Scripted("out of answers".into()),
        LmError::ResponseTooLarge { limit: 4 << 20 },
        LmError::InvalidSetting("temperature is NaN".into()),
        LmError::Cancelled,
        LmError::DeadlinePassed,
    ]
}

/// One value of every variant of the library's error tree.
fn every_error() -> Vec<Error> {
    let lm = lm_errors();
    let dir = PathBuf::from("/tmp/index");
    let retrieve = vec![
        RetrieveError::io("/tmp/corpus.jsonl", io()),
        RetrieveError::UnknownFormat {
            path: "/tmp/corpus.txt".into(),
        },
        RetrieveError::BadLine {
            path: "/tmp/corpus.jsonl".into(),
            line: 4,
            message: "invalid passage JSON".into(),
        },
        RetrieveError::MissingIndex { dir: dir.clone() },
        RetrieveError::SchemaVersion {
            dir: dir.clone(),
            found: 1,
            expected: 2,
        },
        RetrieveError::BadMetadata {
            path: dir.join("meta.json"),
            message: "not JSON".into(),
        },
        RetrieveError::NotAnIndex { dir },
        RetrieveError::InvalidOption("memory_mb must be at least 15".into()),
        RetrieveError::NoDefaultDir,
        RetrieveError::Cancelled,
        RetrieveError::tantivy(
            "opening the index",
            tantivy::TantivyError::InvalidArgument("bad schema".into()),
        ),
    ];
    let mut all = vec![
        Error::Signature(Signature::parse("question answer").unwrap_err()),
        Error::Parse(ParseError {
            adapter: "ChatAdapter",
            message: "missing field `answer`".into(),
            raw: "[[ ## reasoning ## ]]".into(),
        }),
        Error::Script("qa.rhai:2:5: Function not found: cal".into()),
        Error::data("/tmp/train.jsonl", 3, "expected a JSON object"),
        Error::io("/tmp/missing.rhai", io()),
        Error::Config("no LM configured".into()),
        Error::Interrupted,
    ];
    all.extend(lm.into_iter().map(Error::Lm));
    all.extend(retrieve.into_iter().map(Error::Retrieve));
    all
}

/// The pieces of a rendered chain that repeat, if any.
fn repeated_segments(text: &str) -> Vec<String> {
    let segments: Vec<&str> = text
        .split(": ")
        .map(str::trim)
        .filter(|s| s.len() > 3)
        .collect();
    let mut repeated = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if segments[..i].contains(s) {
            repeated.push(s.to_string());
        }
    }
    repeated
}

#[test]
fn no_error_variant_repeats_text_in_its_chain() {
    let all = every_error();
    assert!(all.len() >= 26, "{} variants", all.len());
    for error in all {
        let plain = format!("{error:#}");
        assert!(
            repeated_segments(&plain).is_empty(),
            "{{:#}} repeats {:?}: {plain}",
            repeated_segments(&plain)
        );
        let debug = format!("{error:?}");
        // The CLI adds context and prints the chain with each text once.
        let wrapped = anyhow::Error::from(error).context("loading the script");
        let cli = dspy_rhai::error::join_chain(wrapped.chain().map(|c| c.to_string()));
        assert!(
            repeated_segments(&cli).is_empty(),
            "CLI chain repeats {:?}: {cli} ({debug})",
            repeated_segments(&cli)
        );
        assert!(cli.starts_with("loading the script: "), "{cli}");
        let alt = format!("{wrapped:#}");
        assert!(
            repeated_segments(&alt).is_empty(),
            "anyhow {{:#}} repeats: {alt}"
        );
    }
}

#[test]
fn the_chain_renderer_skips_a_cause_already_in_the_message() {
    let joined = dspy_rhai::error::join_chain(
        [
            "reading x.rhai: No such file (os error 2)",
            "No such file (os error 2)",
            "",
            "deeper cause",
        ]
        .map(String::from),
    );
    assert_eq!(
        joined,
        "reading x.rhai: No such file (os error 2): deeper cause"
    );
    assert_eq!(
        dspy_rhai::error::in_context("ProgramOfThought", "ProgramOfThought: no program ran"),
        "ProgramOfThought: no program ran"
    );
    assert_eq!(
        dspy_rhai::error::in_context("qa", "LM timed out"),
        "qa: LM timed out"
    );
}

/// A script error carries an LM error as text; reports sort it back by that
/// text (`script_error_kind`), so each variant's wording must be known there.
#[test]
fn every_lm_error_inside_a_script_error_is_sorted_as_one() {
    for error in lm_errors() {
        let text = format!("qa.rhai:10:12: answer: {error}");
        let expected = match error {
            LmError::NotConfigured => "no-lm",
            LmError::Cancelled => "interrupted",
            // A script call out of time, like the host's own timeout error.
            LmError::DeadlinePassed => "script",
            _ => "lm",
        };
        assert_eq!(
            dspy_rhai::evaluate::script_error_kind(&text),
            expected,
            "{text}"
        );
        // The typed error is sorted the same way.
        assert_eq!(
            dspy_rhai::evaluate::error_kind(&dspy_rhai::Error::Lm(error)),
            expected,
            "{text}"
        );
    }
}
