//! Retrieval from scripts: `retrieve(query, k)` returns DSPy's
//! `"Title | text"` passages, `retrieve_passages(query, k)` returns maps
//! `{id, title, text, score}`, and `Retrieve(k)` is DSPy's module object
//! (`Retrieve(3).call(query).passages`). `use_index(dir)` selects a local
//! index and `use_retriever("colbertv2:http://...")` any retriever URI
//! (`tantivy:DIR`, `colbertv2:URL`, `opensearch:URL/INDEX`); by default it is
//! `--retriever`/`--index`, `$DSPY_RETRIEVER`/`$DSPY_INDEX` or the platform
//! data dir. `retriever_name()` says which one is in use.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::script_error;
use crate::host::Shared;
use crate::retrieve::{Passage, RetrieverSpec};

type R<T> = Result<T, Box<EvalAltResult>>;

const MODULE_FN: &str = "__dspy_retrieve";

fn search(shared: &Shared, ctx: &NativeCallContext, query: &str, k: i64) -> R<Vec<Passage>> {
    let k = usize::try_from(k).ok().filter(|k| *k > 0).ok_or_else(|| {
        script_error(
            format!("retrieve: k must be a positive integer, got {k}"),
            ctx.call_position(),
        )
    })?;
    shared
        .index
        .get()
        .and_then(|retriever| retriever.search(query, k))
        .map_err(|e| script_error(format!("retrieve: {e}"), ctx.call_position()))
}

fn texts(passages: Vec<Passage>) -> Array {
    passages
        .iter()
        .map(|p| Dynamic::from(p.dspy_text()))
        .collect()
}

fn maps(passages: Vec<Passage>) -> Array {
    passages
        .into_iter()
        .map(|p| {
            let mut m = Map::new();
            m.insert("id".into(), p.id.into());
            m.insert("title".into(), p.title.into());
            m.insert("text".into(), p.text.into());
            m.insert("score".into(), Dynamic::from(p.score as f64));
            Dynamic::from_map(m)
        })
        .collect()
}

/// Registers retrieval functions.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    let s = shared.clone();
    engine.register_fn(
        "retrieve",
        move |ctx: NativeCallContext, query: &str, k: i64| search(&s, &ctx, query, k).map(texts),
    );
    let s = shared.clone();
    engine.register_fn("retrieve", move |ctx: NativeCallContext, query: &str| {
        search(&s, &ctx, query, 3).map(texts)
    });
    let s = shared.clone();
    engine.register_fn(
        "retrieve_passages",
        move |ctx: NativeCallContext, query: &str, k: i64| search(&s, &ctx, query, k).map(maps),
    );
    let s = shared.clone();
    engine.register_fn(
        "use_index",
        move |ctx: NativeCallContext, dir: &str| -> R<()> {
            let dir = s
                .resolve_path(dir, false)
                .map_err(|e| script_error(format!("use_index: {e}"), ctx.call_position()))?;
            s.index.select(RetrieverSpec::Tantivy(Some(dir)));
            Ok(())
        },
    );
    let s = shared.clone();
    engine.register_fn(
        "use_retriever",
        move |ctx: NativeCallContext, uri: &str| -> R<()> {
            let spec = RetrieverSpec::parse(uri)
                .map_err(|e| script_error(format!("use_retriever: {e}"), ctx.call_position()))?;
            s.index.select(spec);
            Ok(())
        },
    );
    let s = shared.clone();
    engine.register_fn("retriever_name", move || s.index.spec().to_string());
    engine.register_fn("Retrieve", |ctx: NativeCallContext, k: i64| -> R<FnPtr> {
        if k <= 0 {
            return Err(script_error(
                format!("Retrieve: k must be positive, got {k}"),
                ctx.call_position(),
            ));
        }
        let mut ptr = FnPtr::new(MODULE_FN).expect("valid function name");
        ptr.add_curry(Dynamic::from(k));
        Ok(ptr)
    });
    let s = shared.clone();
    engine.register_fn(
        MODULE_FN,
        move |ctx: NativeCallContext, k: i64, query: &str| -> R<Map> {
            let mut m = Map::new();
            m.insert(
                "passages".into(),
                Dynamic::from_array(search(&s, &ctx, query, k).map(texts)?),
            );
            Ok(m)
        },
    );
}
