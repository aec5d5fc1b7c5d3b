//! DSPy's built-in metrics, ported from `dspy/evaluate/metrics.py`,
//! `dspy/dsp/utils/dpr.py` and `dspy/datasets/gsm8k.py`.
//!
//! Text is compared after SQuAD-style [`normalize_text`]. Metric functions
//! take the gold [`Example`] and the prediction as a JSON map; unlike DSPy
//! they never fail: a missing or `null` field scores 0.
//!
//! Python's notions of "whitespace", "word character" and "digit" are kept
//! (they differ from Rust's `char` methods at the edges), so scores match
//! DSPy's on normal and non-ASCII text alike.

use std::collections::HashMap;
use std::sync::LazyLock;

use icu_normalizer::DecomposingNormalizerBorrowed;
use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::data::Example;

/// Runs of Python `\w` characters (letters, numbers, underscore).
static WORD_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{L}\p{N}_]+").expect("valid regex"));

/// DPR's `SimpleTokenizer`: alphanumeric-or-mark runs, or any single
/// character that is neither a separator nor a control/format character.
static DPR_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]").expect("valid regex"));

/// SQuAD normalisation as in DSPy: Unicode NFD, lowercase, drop ASCII
/// punctuation (`string.punctuation`), replace the words `a`/`an`/`the` by
/// spaces, then collapse whitespace.
///
/// Note that NFD splits accents off their letters and Python's `\b` does
/// not count combining marks as word characters, so `"thé"` loses its
/// `the` (leaving only the accent) exactly as in DSPy.
pub fn normalize_text(text: &str) -> String {
    let decomposed = DecomposingNormalizerBorrowed::new_nfd().normalize(text);
    let lowered = decomposed.to_lowercase();
    let unpunctuated: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let mut without_articles = String::with_capacity(unpunctuated.len());
    let mut last = 0;
    for word in WORD_RUN.find_iter(&unpunctuated) {
        if matches!(word.as_str(), "a" | "an" | "the") {
            without_articles.push_str(&unpunctuated[last..word.start()]);
            without_articles.push(' ');
            last = word.end();
        }
    }
    without_articles.push_str(&unpunctuated[last..]);
    py_split(&without_articles).collect::<Vec<_>>().join(" ")
}

/// Whether the two strings are equal after [`normalize_text`] (DSPy's
/// `em_score`).
pub fn exact_match(prediction: &str, gold: &str) -> bool {
    normalize_text(prediction) == normalize_text(gold)
}

/// Token-level F1 between the normalised strings (DSPy's `f1_score`).
/// Two empty strings score 0, as in DSPy.
pub fn f1_score(prediction: &str, gold: &str) -> f64 {
    token_f1(&normalize_text(prediction), &normalize_text(gold))
}

/// HotPotQA's F1 (DSPy's `hotpot_f1_score`): 0 when either normalised side
/// is `yes`, `no` or `noanswer` and the two differ; [`f1_score`] otherwise.
pub fn hotpot_f1_score(prediction: &str, gold: &str) -> f64 {
    let prediction = normalize_text(prediction);
    let gold = normalize_text(gold);
    let special = |s: &str| matches!(s, "yes" | "no" | "noanswer");
    if (special(&prediction) || special(&gold)) && prediction != gold {
        return 0.0;
    }
    token_f1(&prediction, &gold)
}

fn token_f1(prediction: &str, gold: &str) -> f64 {
    let predicted: Vec<&str> = py_split(prediction).collect();
    let expected: Vec<&str> = py_split(gold).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for token in &expected {
        *counts.entry(token).or_default() += 1;
    }
    let mut same = 0usize;
    for token in &predicted {
        if let Some(n) = counts.get_mut(token) {
            if *n > 0 {
                *n -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / predicted.len() as f64;
    let recall = same as f64 / expected.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// DPR's tokenisation (`DPR_normalize`): NFD, then [`DPR_TOKEN`] matches,
/// lowercased.
fn dpr_tokens(text: &str) -> Vec<String> {
    let decomposed = DecomposingNormalizerBorrowed::new_nfd().normalize(text);
    DPR_TOKEN
        .find_iter(&decomposed)
        .map(|m| m.as_str().to_lowercase())
        .collect()
}

/// Whether `passage` contains any of `answers` as a contiguous token
/// sequence, after [`normalize_text`] and DPR tokenisation of both (DSPy's
/// `has_answer` as used by `answer_passage_match`). An answer that
/// normalises to nothing (e.g. `"the"`) matches every passage, as in DSPy.
pub fn passage_has_answer<S: AsRef<str>>(passage: &str, answers: &[S]) -> bool {
    let text = dpr_tokens(&normalize_text(passage));
    answers.iter().any(|answer| {
        let wanted = dpr_tokens(&normalize_text(answer.as_ref()));
        wanted.is_empty() || text.windows(wanted.len()).any(|w| w == wanted.as_slice())
    })
}

/// DSPy's `parse_integer_answer` (GSM8K): on the first line of `answer`,
/// take the last whitespace-separated token containing a digit, keep what
/// precedes its first `.`, keep only its digits, and read them as an
/// integer. Anything unparsable is 0.
///
/// So signs are dropped (`-5` → 5), `$1,234` → 1234, `18.0` → 18, `.5` → 0,
/// and fullwidth or other decimal digits count (`１８` → 18) while a
/// superscript makes the token unparsable (`m²` → 0), as in Python.
/// Values beyond `u128` saturate.
pub fn parse_integer_answer(answer: &str) -> u128 {
    let first_line = answer
        .trim_matches(py_is_space)
        .split('\n')
        .next()
        .unwrap_or("");
    let Some(token) = py_split(first_line)
        .filter(|t| t.chars().any(py_is_digit))
        .last()
    else {
        return 0;
    };
    let before_dot = token.split('.').next().unwrap_or("");
    let mut value: u128 = 0;
    let mut seen = false;
    for c in before_dot.chars().filter(|&c| py_is_digit(c)) {
        let Some(d) = decimal_value(c) else {
            return 0; // int() rejects digits that are not decimal, like '²'.
        };
        value = value.saturating_mul(10).saturating_add(u128::from(d));
        seen = true;
    }
    if seen {
        value
    } else {
        0
    }
}

/// DSPy's `answer_exact_match`: the example's `answer` (a string or a list
/// of acceptable strings) against the prediction's `answer`. With
/// `frac >= 1` this is [`exact_match`] against any answer; otherwise the
/// best [`f1_score`] must reach `frac`.
pub fn answer_exact_match(example: &Example, pred: &Map<String, Value>, frac: f64) -> bool {
    let (Some(prediction), Some(answers)) = (field_text(pred, "answer"), gold_answers(example))
    else {
        return false;
    };
    if frac >= 1.0 {
        answers.iter().any(|a| exact_match(&prediction, a))
    } else {
        max_f1(&prediction, &answers, f1_score) >= frac
    }
}

/// The best [`f1_score`] of the prediction's `answer` against the example's
/// acceptable answers (DSPy's `F1`); 0 when either is missing.
pub fn answer_f1(example: &Example, pred: &Map<String, Value>) -> f64 {
    match (field_text(pred, "answer"), gold_answers(example)) {
        (Some(prediction), Some(answers)) => max_f1(&prediction, &answers, f1_score),
        _ => 0.0,
    }
}

/// Like [`answer_f1`] with [`hotpot_f1_score`] (DSPy's `HotPotF1`).
pub fn answer_hotpot_f1(example: &Example, pred: &Map<String, Value>) -> f64 {
    match (field_text(pred, "answer"), gold_answers(example)) {
        (Some(prediction), Some(answers)) => max_f1(&prediction, &answers, hotpot_f1_score),
        _ => 0.0,
    }
}

fn max_f1(prediction: &str, answers: &[String], f1: fn(&str, &str) -> f64) -> f64 {
    answers
        .iter()
        .map(|a| f1(prediction, a))
        .fold(0.0, f64::max)
}

/// DSPy's `answer_passage_match`: some passage of the prediction's `context`
/// contains one of the example's answers (see [`passage_has_answer`]).
pub fn answer_passage_match(example: &Example, pred: &Map<String, Value>) -> bool {
    let (Some(passages), Some(answers)) = (field_list(pred.get("context")), gold_answers(example))
    else {
        return false;
    };
    passages.iter().any(|p| passage_has_answer(p, &answers))
}

/// The HotPotQA metric from DSPy's Baleen example: every title in the
/// example's `gold_titles` is the title of some passage in the prediction's
/// `context`. A passage's title is the text before its first `" | "`; both
/// sides are compared after [`normalize_text`]. An empty `gold_titles` list
/// passes, as in DSPy; a missing one fails.
pub fn gold_passages_retrieved(example: &Example, pred: &Map<String, Value>) -> bool {
    let (Some(gold), Some(passages)) = (
        field_list(example.get("gold_titles")),
        field_list(pred.get("context")),
    ) else {
        return false;
    };
    let found: Vec<String> = passages
        .iter()
        .map(|p| normalize_text(p.split(" | ").next().unwrap_or("")))
        .collect();
    gold.iter()
        .all(|title| found.contains(&normalize_text(title)))
}

/// DSPy's `gsm8k_metric`: [`parse_integer_answer`] of the gold and the
/// predicted `answer` agree. A missing prediction fails (DSPy raises).
pub fn gsm8k_metric(example: &Example, pred: &Map<String, Value>) -> bool {
    let Some(predicted) = field_text(pred, "answer") else {
        return false;
    };
    let gold = example.get("answer").map_or_else(|| "None".into(), py_str);
    parse_integer_answer(&gold) == parse_integer_answer(&predicted)
}

/// A metric that can be named on the command line or from a script.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BuiltinMetric {
    /// [`answer_exact_match`] with the given `frac`.
    AnswerExactMatch {
        /// 1.0 for exact match; below 1, the F1 threshold.
        frac: f64,
    },
    /// [`answer_f1`].
    F1,
    /// [`answer_hotpot_f1`].
    HotpotF1,
    /// [`answer_passage_match`].
    AnswerPassageMatch,
    /// [`gold_passages_retrieved`].
    GoldPassagesRetrieved,
    /// [`gsm8k_metric`].
    Gsm8k,
}

const NAMES: &[&str] = &[
    "answer_exact_match",
    "exact_match",
    "f1",
    "hotpot_f1",
    "answer_passage_match",
    "gold_passages_retrieved",
    "gsm8k",
    "gsm8k_metric",
];

/// The names [`builtin`] accepts, for help text.
pub fn names() -> &'static [&'static str] {
    NAMES
}

/// The built-in metric called `name` (see [`names`]), or `None`.
pub fn builtin(name: &str) -> Option<BuiltinMetric> {
    Some(match name {
        "answer_exact_match" | "exact_match" => BuiltinMetric::AnswerExactMatch { frac: 1.0 },
        "f1" => BuiltinMetric::F1,
        "hotpot_f1" => BuiltinMetric::HotpotF1,
        "answer_passage_match" => BuiltinMetric::AnswerPassageMatch,
        "gold_passages_retrieved" => BuiltinMetric::GoldPassagesRetrieved,
        "gsm8k" | "gsm8k_metric" => BuiltinMetric::Gsm8k,
        _ => return None,
    })
}

impl BuiltinMetric {
    /// The example fields (gold labels) this metric reads.
    pub fn gold_fields(&self) -> &'static [&'static str] {
        match self {
            BuiltinMetric::GoldPassagesRetrieved => &["gold_titles"],
            _ => &["answer"],
        }
    }

    /// Scores one prediction against its example: booleans as 0 or 1, F1
    /// metrics in `[0, 1]`.
    pub fn score(&self, example: &Example, pred: &Map<String, Value>) -> f64 {
        let pass = |ok: bool| if ok { 1.0 } else { 0.0 };
        match *self {
            BuiltinMetric::AnswerExactMatch { frac } => {
                pass(answer_exact_match(example, pred, frac))
            }
            BuiltinMetric::F1 => answer_f1(example, pred),
            BuiltinMetric::HotpotF1 => answer_hotpot_f1(example, pred),
            BuiltinMetric::AnswerPassageMatch => pass(answer_passage_match(example, pred)),
            BuiltinMetric::GoldPassagesRetrieved => pass(gold_passages_retrieved(example, pred)),
            BuiltinMetric::Gsm8k => pass(gsm8k_metric(example, pred)),
        }
    }
}

/// A metric's verdict on one prediction: a score and, when the metric gives
/// one, textual feedback (DSPy's `ScoreWithFeedback`, `dspy/teleprompt/gepa/gepa_utils.py`).
/// Feedback-driven optimizers (GEPA, SIMBA) show the feedback to the reflection LM.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scored {
    /// The score, usually in `[0, 1]`.
    pub score: f64,
    /// Feedback text, if the metric gave any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
}

impl Scored {
    /// A score without feedback.
    pub fn score(score: f64) -> Scored {
        Scored {
            score,
            feedback: None,
        }
    }

    /// The feedback, or DSPy GEPA's default for metrics that give none:
    /// `This trajectory got a score of {score}.` (the score as Python prints a float).
    pub fn feedback_or_default(&self) -> String {
        self.feedback
            .clone()
            .unwrap_or_else(|| format!("This trajectory got a score of {}.", py_float(self.score)))
    }
}

/// Python's `str(float)` for the values metrics give (`1.0`, `0.5`, `0.3333333333333333`).
pub fn py_float(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

impl BuiltinMetric {
    /// The default feedback of a built-in metric: what was expected versus
    /// what the program produced, and the score. Fields follow the metric:
    /// `answer` for answer metrics, `gold_titles` against the titles of the
    /// predicted `context` for [`gold_passages_retrieved`], the answers
    /// against the predicted `context` for [`answer_passage_match`].
    pub fn feedback(&self, example: &Example, pred: &Map<String, Value>, score: f64) -> String {
        let show = |v: Option<&Value>| match v {
            None | Some(Value::Null) => "nothing".to_string(),
            Some(Value::String(s)) => format!("{s:?}"),
            Some(other) => other.to_string(),
        };
        let (what, expected, got) = match self {
            BuiltinMetric::GoldPassagesRetrieved => {
                let titles: Option<Value> = field_list(pred.get("context")).map(|ps| {
                    ps.iter()
                        .map(|p| Value::String(p.split(" | ").next().unwrap_or("").to_string()))
                        .collect()
                });
                (
                    "passage titles",
                    show(example.get("gold_titles")),
                    show(titles.as_ref()),
                )
            }
            BuiltinMetric::AnswerPassageMatch => (
                "a passage containing the answer",
                show(example.get("answer")),
                show(pred.get("context")),
            ),
            _ => (
                "answer",
                show(example.get("answer")),
                show(pred.get("answer")),
            ),
        };
        format!(
            "Expected {what}: {expected}. Got: {got}. Score: {}.",
            py_float(score)
        )
    }

    /// Scores one prediction and gives the default [`BuiltinMetric::feedback`].
    pub fn judge(&self, example: &Example, pred: &Map<String, Value>) -> Scored {
        let score = self.score(example, pred);
        Scored {
            score,
            feedback: Some(self.feedback(example, pred, score)),
        }
    }
}

/// Python's `str(value)` for JSON values (lists and objects as JSON text).
fn py_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        other => other.to_string(),
    }
}

/// A field as text; `None` when missing or `null`.
fn field_text(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).filter(|v| !v.is_null()).map(py_str)
}

/// A field holding a list of strings (or one string, taken as a list of
/// one); `None` when missing or `null`.
fn field_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::Null => None,
        Value::Array(items) => Some(items.iter().filter(|v| !v.is_null()).map(py_str).collect()),
        other => Some(vec![py_str(other)]),
    }
}

fn gold_answers(example: &Example) -> Option<Vec<String>> {
    field_list(example.get("answer"))
}

/// Python's `str.split()` with no argument.
fn py_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(py_is_space).filter(|t| !t.is_empty())
}

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII
/// information separators U+001C..U+001F.
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Code points of the digit zero of every run of decimal digits (Unicode
/// category Nd; each run is ten consecutive code points), from Python
/// 3.11's `unicodedata` (Unicode 14).
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// Characters Python calls digits (`str.isdigit()`) that are not decimal:
/// superscripts, subscripts, circled digits and the like (inclusive ranges).
const NON_DECIMAL_DIGITS: [(u32, u32); 20] = [
    (0xB2, 0xB3),
    (0xB9, 0xB9),
    (0x1369, 0x1371),
    (0x19DA, 0x19DA),
    (0x2070, 0x2070),
    (0x2074, 0x2079),
    (0x2080, 0x2089),
    (0x2460, 0x2468),
    (0x2474, 0x247C),
    (0x2488, 0x2490),
    (0x24EA, 0x24EA),
    (0x24F5, 0x24FD),
    (0x24FF, 0x24FF),
    (0x2776, 0x277E),
    (0x2780, 0x2788),
    (0x278A, 0x2792),
    (0x10A40, 0x10A43),
    (0x10E60, 0x10E68),
    (0x11052, 0x1105A),
    (0x1F100, 0x1F10A),
];

/// The value of a decimal digit (Unicode Nd), as Python's `int()` reads it.
fn decimal_value(c: char) -> Option<u32> {
    let cp = u32::from(c);
    let i = DECIMAL_ZEROS.partition_point(|&zero| zero <= cp);
    let zero = DECIMAL_ZEROS[i.checked_sub(1)?];
    (cp - zero < 10).then_some(cp - zero)
}

/// Python's `str.isdigit()` for one character.
fn py_is_digit(c: char) -> bool {
    let cp = u32::from(c);
    decimal_value(c).is_some()
        || NON_DECIMAL_DIGITS
            .iter()
            .any(|&(a, b)| (a..=b).contains(&cp))
}
