//! Saved programs: per-predictor signature, demos and LM settings as JSON, in
//! DSPy's `save()` layout so files move between DSPy and dspy-rhai.
//!
//! ```json
//! { "answer": { "traces": [], "train": [], "demos": [ {"augmented": true, "question": "...", ...} ],
//!               "signature": { "instructions": "...",
//!                              "fields": [ {"name": "question", "prefix": "Question:", "description": "${question}"}, ... ] },
//!               "lm": null, "adapter": "xml" },
//!   "metadata": { "dependency_versions": {...}, "dspy_rhai": { "optimizer": ..., "scores": ... } } }
//! ```
//! `adapter` is written only when the script or an optimizer chose one
//! (`chat`, `json`, `xml`); DSPy keeps the adapter in its global settings,
//! and its `load_state` keeps the key as an unused attribute. DSPy writes
//! fields without `name`; such files are matched by field count
//! and prefix. DSPy names a ChainOfThought's inner predictor `x.predict`;
//! it is matched to the script's `x`.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::adapter::{AdapterKind, Fields};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::lm::LmSettings;
use crate::predict::{Demo, Predictor, PredictorState, ProgramState};

/// Keys DSPy adds to examples that are not fields.
const BOOKKEEPING_KEYS: [&str; 3] = ["augmented", "dspy_uuid", "dspy_split"];

/// Serializes a program's state as DSPy-layout JSON.
pub fn to_json(predictors: &[(String, Predictor)], state: &ProgramState, metadata: Value) -> Value {
    let mut root = Map::new();
    for (name, p) in predictors {
        let st = state.get(name).cloned().unwrap_or_default();
        let sig = match &st.instructions {
            Some(i) => p.signature().with_instructions(i.clone()),
            None => p.signature().clone(),
        };
        let fields: Vec<Value> = sig
            .fields()
            .map(|f| {
                json!({
                    "name": f.name,
                    "type": f.ty.to_string(),
                    "prefix": f.prefix(),
                    "description": f.desc_or_placeholder(),
                })
            })
            .collect();
        let demos: Vec<Value> = st
            .demos
            .iter()
            .map(|d| {
                let mut m = Map::new();
                if d.augmented {
                    m.insert("augmented".into(), Value::Bool(true));
                }
                m.extend(d.fields.clone());
                Value::Object(m)
            })
            .collect();
        let lm = if st.lm == LmSettings::default() {
            Value::Null
        } else {
            serde_json::to_value(&st.lm).unwrap_or(Value::Null)
        };
        let mut entry = json!({
            "traces": [],
            "train": [],
            "demos": demos,
            "signature": { "instructions": sig.instructions(), "fields": fields },
            "lm": lm,
        });
        // The adapter, when the script or an optimizer chose one (DSPy keeps
        // it in global settings; a run's `--adapter` is not recorded).
        if let Some(adapter) = st.adapter.or(p.adapter()) {
            entry["adapter"] = Value::String(adapter.as_str().into());
        }
        root.insert(name.clone(), entry);
    }
    root.insert(
        "metadata".into(),
        json!({
            "dependency_versions": { "dspy_rhai": env!("CARGO_PKG_VERSION") },
            "dspy_rhai": metadata,
        }),
    );
    Value::Object(root)
}

/// Writes a program file (atomically: a temp file renamed into place).
pub fn save(path: &Path, program: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(program).expect("JSON values serialize");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates 0600 files; ask for 0666 so the user's umask decides,
    // as for any file a program writes.
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Reads a program file and matches it against the script's predictors,
/// returning the state to install. Any difference in predictor names or
/// signatures is an error listing all of them.
pub fn load(path: &Path, predictors: &[(String, Predictor)]) -> Result<ProgramState> {
    load_full(path, predictors).map(|loaded| loaded.state)
}

/// How a saved program runs besides its fixed state.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// The state is the whole program.
    #[default]
    Fixed,
    /// KNNFewShot: per-input demos from the `k` nearest trainset examples.
    Knn {
        /// Neighbours per input.
        k: usize,
        /// The examples demos come from.
        trainset: Vec<Example>,
        /// Bootstrap on the neighbours per input (DSPy's behaviour) with at
        /// most this many bootstrapped demos; `None`: neighbours as labeled demos.
        bootstrap: Option<usize>,
    },
    /// Ensemble: these member states vote by majority.
    Ensemble {
        /// Member states.
        members: Vec<ProgramState>,
    },
}

/// A program file as loaded: the state to install and how it runs.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The state to install.
    pub state: ProgramState,
    /// KNN or ensemble behaviour, if any.
    pub mode: Mode,
    /// `metadata.dspy_rhai` (null for files DSPy wrote).
    pub metadata: Value,
}

/// Like [`load`], also reading KNN and ensemble settings from the metadata.
pub fn load_full(path: &Path, predictors: &[(String, Predictor)]) -> Result<Loaded> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let root: Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(path, e.line(), format!("not valid JSON: {e}")))?;
    let Value::Object(root) = root else {
        return Err(Error::data(path, 1, "a saved program is a JSON object"));
    };
    let mismatch = |problems: Vec<String>| {
        Error::Config(format!(
            "{} does not match the script:\n  - {}",
            path.display(),
            problems.join("\n  - ")
        ))
    };
    let state = from_json(&root, predictors).map_err(mismatch)?;
    let ours = root.get("metadata").and_then(|m| m.get("dspy_rhai"));
    let bad = |field: &str, what: &str| {
        Error::data(path, 0, format!("`metadata.dspy_rhai.{field}` {what}"))
    };
    let mode = if let Some(knn) = ours.and_then(|m| m.get("knn")).filter(|v| !v.is_null()) {
        let knn = knn
            .as_object()
            .ok_or_else(|| bad("knn", "is not an object"))?;
        let k = match knn.get("k") {
            None => 3,
            Some(v) => v
                .as_u64()
                .filter(|k| *k > 0)
                .ok_or_else(|| bad("knn.k", "is not a positive integer"))?
                as usize,
        };
        let trainset: Vec<Example> = serde_json::from_value(
            knn.get("trainset")
                .cloned()
                .ok_or_else(|| bad("knn.trainset", "is missing"))?,
        )
        .map_err(|e| bad("knn.trainset", &format!("is not a list of examples: {e}")))?;
        let bootstrap = match knn.get("bootstrap") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| bad("knn.bootstrap", "is not an integer or null"))?
                    as usize,
            ),
        };
        Mode::Knn {
            k,
            trainset,
            bootstrap,
        }
    } else if let Some(members) = ours
        .and_then(|m| m.get("ensemble"))
        .filter(|v| !v.is_null())
    {
        let members = members
            .as_array()
            .ok_or_else(|| bad("ensemble", "is not a list of member programs"))?;
        if members.is_empty() {
            return Err(bad("ensemble", "has no members"));
        }
        let members = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let m = m
                    .as_object()
                    .ok_or_else(|| bad(&format!("ensemble[{i}]"), "is not an object"))?;
                from_json(m, predictors).map_err(|problems| {
                    bad(
                        &format!("ensemble[{i}]"),
                        &format!("does not match the script: {}", problems.join("; ")),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Mode::Ensemble { members }
    } else {
        Mode::Fixed
    };
    Ok(Loaded {
        state,
        mode,
        metadata: ours.cloned().unwrap_or(Value::Null),
    })
}

/// The metadata entries that make a saved program KNN or an ensemble.
pub fn mode_metadata(predictors: &[(String, Predictor)], mode: &Mode) -> Value {
    match mode {
        Mode::Fixed => Value::Null,
        Mode::Knn {
            k,
            trainset,
            bootstrap,
        } => {
            json!({ "k": k, "trainset": trainset, "bootstrap": bootstrap })
        }
        Mode::Ensemble { members } => Value::Array(
            members
                .iter()
                .map(|m| {
                    let mut v = to_json(predictors, m, Value::Null);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("metadata");
                    }
                    v
                })
                .collect(),
        ),
    }
}

/// Matches saved entries to predictors; `Err` lists every difference.
pub fn from_json(
    root: &Map<String, Value>,
    predictors: &[(String, Predictor)],
) -> std::result::Result<ProgramState, Vec<String>> {
    let mut problems = Vec::new();
    let mut state = ProgramState::default();
    let mut matched = Vec::new();
    for (key, entry) in root {
        let Some(entry) = entry.as_object().filter(|e| e.contains_key("demos")) else {
            continue; // metadata, or non-predictor state such as DSPy's `retrieve: {k: 3}`
        };
        let find = |n: &str| predictors.iter().find(|(name, _)| name == n);
        let name = if find(key).is_some() {
            key.clone()
        } else if let Some(stripped) = key.strip_suffix(".predict").filter(|s| find(s).is_some()) {
            stripped.to_string()
        } else {
            problems.push(format!(
                "the file has predictor `{key}`, which the script does not declare"
            ));
            continue;
        };
        let predictor = &find(&name).expect("matched above").1;
        match entry_state(entry, predictor) {
            Ok(st) => state.set(&name, st),
            Err(p) => problems.push(format!("`{name}`: {p}")),
        }
        matched.push(name);
    }
    for (name, _) in predictors {
        if !matched.contains(name) {
            problems.push(format!(
                "the script declares `{name}`, which the file lacks"
            ));
        }
    }
    if problems.is_empty() {
        Ok(state)
    } else {
        Err(problems)
    }
}

fn entry_state(
    entry: &Map<String, Value>,
    predictor: &Predictor,
) -> std::result::Result<PredictorState, String> {
    let sig = predictor.signature();
    let mut instructions = None;
    match entry.get("signature") {
        None | Some(Value::Null) => {}
        Some(Value::Object(saved)) => {
            match saved.get("fields") {
                None | Some(Value::Null) => {}
                Some(Value::Array(fields)) => check_fields(fields, predictor)?,
                Some(_) => return Err("`signature.fields` is not a list".into()),
            }
            match saved.get("instructions") {
                None | Some(Value::Null) => {}
                Some(Value::String(i)) => {
                    if *i != sig.instructions() {
                        instructions = Some(i.to_string());
                    }
                }
                Some(_) => return Err("`signature.instructions` is not a string".into()),
            }
        }
        Some(_) => return Err("`signature` is not an object".into()),
    }
    let demos = match entry.get("demos") {
        Some(Value::Array(demos)) => demos
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let d = d
                    .as_object()
                    .ok_or_else(|| format!("`demos[{i}]` is not an object"))?;
                let augmented = d.get("augmented").and_then(Value::as_bool).unwrap_or(false);
                let fields: Fields = d
                    .iter()
                    .filter(|(k, _)| !BOOKKEEPING_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Ok(Demo { fields, augmented })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?,
        _ => return Err("`demos` is not a list".into()),
    };
    let lm = match entry.get("lm") {
        None | Some(Value::Null) | Some(Value::Object(_)) => entry.get("lm"),
        Some(_) => return Err("`lm` is not an object or null".into()),
    };
    let lm = lm
        .and_then(Value::as_object)
        .map(|m| LmSettings {
            temperature: m.get("temperature").and_then(Value::as_f64),
            max_tokens: m
                .get("max_tokens")
                .and_then(Value::as_u64)
                .map(|v| v as u32),
            n: m.get("n").and_then(Value::as_u64).map(|v| v as u32),
        })
        .unwrap_or_default();
    let adapter = match entry.get("adapter") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a.parse::<AdapterKind>()?),
        Some(other) => return Err(format!("`adapter` must be a string, got {other}")),
    };
    Ok(PredictorState {
        demos,
        instructions,
        lm,
        adapter,
    })
}

/// Compares saved fields with the predictor's signature: by name when the
/// file has names, else by count and prefix (DSPy's layout).
fn check_fields(saved: &[Value], predictor: &Predictor) -> std::result::Result<(), String> {
    let sig = predictor.signature();
    let expected: Vec<&str> = sig.fields().map(|f| f.name.as_str()).collect();
    let named: Option<Vec<&str>> = saved
        .iter()
        .map(|f| f.get("name").and_then(Value::as_str))
        .collect();
    let found: Vec<String> = match named {
        Some(names) => names.into_iter().map(str::to_string).collect(),
        None => saved
            .iter()
            .map(|f| {
                let prefix = f.get("prefix").and_then(Value::as_str).unwrap_or("");
                let head = prefix.split(':').next().unwrap_or("").trim();
                head.to_lowercase().replace(' ', "_")
            })
            .collect(),
    };
    let same = found.len() == expected.len()
        && found
            .iter()
            .zip(&expected)
            .all(|(f, e)| f == e || (e == &"reasoning" && f.starts_with("reasoning")));
    if same {
        Ok(())
    } else {
        Err(format!(
            "signature fields differ: the file has [{}], the script has [{}] ({})",
            found.join(", "),
            expected.join(", "),
            predictor.declared_signature()
        ))
    }
}
