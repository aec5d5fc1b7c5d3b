//! Optimizers by name: the one table the CLI (`compile --optimizer NAME`),
//! scripts (`compile("name", trainset, #{...})`) and the REPL use.
//!
//! Adding an optimizer is one file under `src/optimize/` and one [`Entry`]
//! here. Names use `-` (the CLI's spelling); `_` is accepted everywhere, so
//! scripts can write `mipro_v2` or `random_search`.

use serde_json::Value;

use super::config::{parse, suggest};
use super::copro::Copro;
use super::mipro::MiproV2;
use super::{BootstrapFewShot, Ensemble, KnnFewShot, LabeledFewShot, Optimizer, RandomSearch};
use crate::error::{Error, Result};

/// One registered optimizer.
pub struct Entry {
    /// The name (`-` spelling).
    pub name: &'static str,
    /// DSPy's class name, for help and metadata.
    pub dspy: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Builds the optimizer from a JSON config (null: defaults).
    pub build: fn(&Value) -> Result<Box<dyn Optimizer>>,
}

/// Every optimizer, in the order help lists them.
pub const REGISTRY: &[Entry] = &[
    Entry {
        name: "labeled",
        dspy: "LabeledFewShot",
        about: "k labeled demos per predictor",
        build: |c| Ok(Box::new(LabeledFewShot(parse("labeled", c)?))),
    },
    Entry {
        name: "bootstrap",
        dspy: "BootstrapFewShot",
        about: "demos from teacher traces that pass the metric",
        build: |c| Ok(Box::new(BootstrapFewShot(parse("bootstrap", c)?))),
    },
    Entry {
        name: "random-search",
        dspy: "BootstrapFewShotWithRandomSearch",
        about: "the best of many bootstrapped candidates on the valset",
        build: |c| Ok(Box::new(RandomSearch(parse("random-search", c)?))),
    },
    Entry {
        name: "knn",
        dspy: "KNNFewShot",
        about: "per input, the k nearest trainset examples (BM25) as demos",
        build: |c| Ok(Box::new(KnnFewShot(parse("knn", c)?))),
    },
    Entry {
        name: "ensemble",
        dspy: "Ensemble",
        about: "saved programs voting by majority",
        build: |c| Ok(Box::new(Ensemble(parse("ensemble", c)?))),
    },
    Entry {
        name: "copro",
        dspy: "COPRO",
        about: "instruction search: proposals that see earlier attempts and scores",
        build: |c| Ok(Box::new(Copro(parse("copro", c)?))),
    },
    Entry {
        name: "mipro-v2",
        dspy: "MIPROv2",
        about: "instructions and demo sets searched together with a TPE",
        build: |c| Ok(Box::new(MiproV2(parse("mipro-v2", c)?))),
    },
    Entry {
        name: "gepa",
        dspy: "GEPA",
        about: "reflective instruction evolution on a Pareto front (budget: --auto)",
        build: |c| Ok(Box::new(super::gepa::Gepa(parse("gepa", c)?))),
    },
    Entry {
        name: "simba",
        dspy: "SIMBA",
        about: "demos and rules from the examples whose runs differ most",
        build: |c| Ok(Box::new(super::simba::Simba(parse("simba", c)?))),
    },
];

/// The registered names.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The entry for `name` (`_` and `-` are the same).
///
/// # Errors
/// [`Error::Config`] for an unknown name, suggesting the closest one.
pub fn find(name: &str) -> Result<&'static Entry> {
    let wanted = name.trim().to_lowercase().replace('_', "-");
    if let Some(e) = REGISTRY.iter().find(|e| e.name == wanted) {
        return Ok(e);
    }
    let all = names();
    let hint = suggest(&wanted, &all)
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    Err(Error::Config(format!(
        "unknown optimizer `{name}`; {hint}(known: {})",
        all.join(", ")
    )))
}

/// Builds optimizer `name` with `config` (a JSON object of DSPy's
/// parameter names; unknown keys are errors).
pub fn build(name: &str, config: &Value) -> Result<Box<dyn Optimizer>> {
    (find(name)?.build)(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_with_either_separator_and_typos_are_suggested() {
        assert_eq!(find("random_search").unwrap().name, "random-search");
        let err = find("bootstrp").err().unwrap().to_string();
        assert!(err.contains("did you mean `bootstrap`?"), "{err}");
        let err = build(
            "bootstrap",
            &serde_json::json!({"max_bootstraped_demos": 2}),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("did you mean `max_bootstrapped_demos`?"),
            "{err}"
        );
    }
}
