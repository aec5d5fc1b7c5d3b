//! Retrieval from scripts: `retrieve(query, k)` returns DSPy's
//! `"Title | text"` passages, `retrieve_passages(query, k)` returns maps
//! `{id, title, text, score}`, and `Retrieve(k)` is DSPy's module object
//! (`Retrieve(3).call(query).passages`). `use_index(dir)` selects the index;
//! by default it is `--index`, `$DSPY_INDEX` or the platform data dir.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::script_error;
use crate::host::Shared;
use crate::retrieve::{default_index_dir, Index, Passage, RetrieveError};

type R<T> = Result<T, Box<EvalAltResult>>;

/// The lazily opened retrieval index of a host, shared by all workers.
pub(crate) struct IndexSlot {
    dir: Mutex<Option<PathBuf>>,
    index: Mutex<Option<Arc<Index>>>,
}

impl IndexSlot {
    /// A slot for `dir` (the default location when `None`).
    pub fn new(dir: Option<PathBuf>) -> Self {
        IndexSlot {
            dir: Mutex::new(dir),
            index: Mutex::new(None),
        }
    }

    /// Points the slot at another index directory (opened on next use).
    pub fn select(&self, dir: PathBuf) {
        *self.dir.lock().expect("index dir lock") = Some(dir);
        *self.index.lock().expect("index lock") = None;
    }

    /// The index, opened on first use.
    pub fn get(&self) -> Result<Arc<Index>, RetrieveError> {
        let mut slot = self.index.lock().expect("index lock");
        if let Some(index) = slot.as_ref() {
            return Ok(index.clone());
        }
        let dir = match self.dir.lock().expect("index dir lock").clone() {
            Some(d) => d,
            None => default_index_dir()?,
        };
        let index = Arc::new(Index::open(&dir)?);
        *slot = Some(index.clone());
        Ok(index)
    }
}

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
        .and_then(|index| index.search(query, k))
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
            s.index.select(dir);
            Ok(())
        },
    );
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
