//! LM introspection from scripts: `inspect_history(n)` and `lm_usage()`.

use std::sync::Arc;

use rhai::{Dynamic, Engine, Map, NativeCallContext};

use crate::host::Shared;

/// Registers LM helpers.
pub(super) fn register(engine: &mut Engine, shared: &Arc<Shared>) {
    for n in [None, Some(())] {
        let s = shared.clone();
        let print = move |ctx: &NativeCallContext, count: i64| {
            let run = s.context(ctx.tag());
            let text = match &run.lm {
                Some(lm) => lm.history().render(count.max(0) as usize),
                None => "(no LM configured: no history)".to_string(),
            };
            // anstream drops the colour codes unless the stream is a
            // terminal that wants them (`--color`, `NO_COLOR`, `CLICOLOR_FORCE`).
            if s.options.print_to_stderr {
                anstream::eprintln!("{text}");
            } else {
                anstream::println!("{text}");
            }
        };
        match n {
            None => {
                engine.register_fn("inspect_history", move |ctx: NativeCallContext| {
                    print(&ctx, 1)
                });
            }
            Some(()) => {
                engine.register_fn(
                    "inspect_history",
                    move |ctx: NativeCallContext, count: i64| print(&ctx, count),
                );
            }
        }
    }
    let s = shared.clone();
    engine.register_fn("lm_usage", move |ctx: NativeCallContext| -> Map {
        let run = s.context(ctx.tag());
        let mut m = Map::new();
        if let Some(lm) = &run.lm {
            let t = lm.totals();
            m.insert("model".into(), lm.model().to_string().into());
            m.insert("calls".into(), Dynamic::from(t.calls as i64));
            m.insert("cache_hits".into(), Dynamic::from(t.cache_hits as i64));
            m.insert(
                "prompt_tokens".into(),
                Dynamic::from(t.usage.prompt_tokens as i64),
            );
            m.insert(
                "completion_tokens".into(),
                Dynamic::from(t.usage.completion_tokens as i64),
            );
            if let Some(c) = t.cost_usd {
                m.insert("cost_usd".into(), Dynamic::from(c));
            }
        }
        m
    });
}
