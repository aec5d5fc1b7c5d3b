//! `Signature(...)` values and their builder methods.

use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext};

use super::script_error;
use crate::signature::{Field, FieldType, Signature};

type R<T> = Result<T, Box<EvalAltResult>>;

fn field(ctx: &NativeCallContext, name: &str, ty: &str) -> R<Field> {
    let ty = FieldType::parse(ty).ok_or_else(|| {
        script_error(
            format!("unknown field type `{ty}` (known: str, int, float, bool, dict, Any, list[T], Literal[...])"),
            ctx.call_position(),
        )
    })?;
    Ok(Field::new(name, ty))
}

fn names(fields: &[Field]) -> Array {
    fields
        .iter()
        .map(|f| Dynamic::from(f.name.clone()))
        .collect()
}

/// Registers the `Signature` type.
pub(super) fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<Signature>("Signature")
        .register_fn(
            "Signature",
            |ctx: NativeCallContext, text: &str| -> R<Signature> {
                Signature::parse(text).map_err(|e| script_error(e, ctx.call_position()))
            },
        )
        .register_fn(
            "Signature",
            |ctx: NativeCallContext, text: &str, instructions: &str| -> R<Signature> {
                Signature::parse(text)
                    .map(|s| s.with_instructions(instructions))
                    .map_err(|e| script_error(e, ctx.call_position()))
            },
        )
        .register_fn("to_string", |s: &mut Signature| s.to_string())
        .register_fn("to_debug", |s: &mut Signature| {
            format!("Signature(\"{s}\")")
        })
        .register_get("instructions", |s: &mut Signature| s.instructions())
        .register_get("inputs", |s: &mut Signature| names(s.inputs()))
        .register_get("outputs", |s: &mut Signature| names(s.outputs()))
        .register_fn("with_instructions", |s: &mut Signature, text: &str| {
            s.with_instructions(text)
        })
        .register_fn(
            "with_desc",
            |ctx: NativeCallContext, s: &mut Signature, name: &str, desc: &str| -> R<Signature> {
                s.with_desc(name, desc)
                    .map_err(|e| script_error(e, ctx.call_position()))
            },
        );
    type Op = fn(&Signature, Field) -> Result<Signature, crate::signature::SignatureError>;
    let ops: [(&str, Op); 4] = [
        ("prepend_output", Signature::prepend_output),
        ("append_output", Signature::append_output),
        ("prepend_input", Signature::prepend_input),
        ("append_input", Signature::append_input),
    ];
    for (method, op) in ops {
        engine.register_fn(
            method,
            move |ctx: NativeCallContext, s: &mut Signature, name: &str| -> R<Signature> {
                op(s, field(&ctx, name, "str")?).map_err(|e| script_error(e, ctx.call_position()))
            },
        );
        engine.register_fn(
            method,
            move |ctx: NativeCallContext,
                  s: &mut Signature,
                  name: &str,
                  ty: &str|
                  -> R<Signature> {
                op(s, field(&ctx, name, ty)?).map_err(|e| script_error(e, ctx.call_position()))
            },
        );
    }
}
