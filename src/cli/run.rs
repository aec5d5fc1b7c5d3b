//! `dspy-rhai run`: run a pipeline's `forward` once and print the prediction.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;

use crate::adapter::Fields;

use super::common::{print_usage, HostArgs};
use super::UsageError;

/// Run a pipeline script once.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline script (.rhai) defining `fn forward(...)`.
    pub script: PathBuf,
    /// An input for forward, by parameter name (repeatable): --input question="Who wrote Dune?"
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// Inputs as one JSON object: --inputs-json '{"question": "..."}'
    #[arg(long, value_name = "JSON")]
    pub inputs_json: Option<String>,
    /// Install a compiled program (saved by `compile`) before running.
    #[arg(long, value_name = "PROGRAM.json")]
    pub load: Option<PathBuf>,
    /// Print the prediction as JSON on stdout (script prints go to stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Parses `--input` and `--inputs-json` into fields; a malformed one is a
/// [`UsageError`] (exit code 2).
pub fn parse_inputs(pairs: &[String], json: Option<&str>) -> Result<Fields, UsageError> {
    let mut fields = Fields::new();
    if let Some(text) = json {
        let value = serde_json::from_str::<Value>(text)
            .map_err(|e| UsageError(format!("--inputs-json is not valid JSON: {e}")))?;
        match value {
            Value::Object(map) => fields.extend(map),
            _ => {
                return Err(UsageError(
                    "--inputs-json must be a JSON object, e.g. '{\"question\": \"...\"}'".into(),
                ))
            }
        }
    }
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(UsageError(format!(
                "--input expects KEY=VALUE, got `{pair}` (e.g. --input question=\"Who wrote Dune?\")"
            )));
        };
        fields.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(fields)
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let inputs = parse_inputs(&args.inputs, args.inputs_json.as_deref())?;
    let (host, program) = args
        .host
        .load(Some(&args.script), args.load.as_deref(), args.json)?;
    host.forward_params()?;
    let pipeline = program.pipeline(&host)?;
    let session = host.session();
    let result = pipeline.run(&inputs, &session);
    print_usage(&session.lm, started.elapsed());
    let prediction = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(prediction))?
        );
    } else {
        print!("{}", render_prediction(&prediction));
    }
    Ok(())
}

/// A prediction for people: `field: value`, multi-line values indented.
pub fn render_prediction(prediction: &Fields) -> String {
    let mut out = String::new();
    for (k, v) in prediction {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text.contains('\n') {
            out.push_str(&format!("{k}:\n"));
            for line in text.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        } else {
            out.push_str(&format!("{k}: {text}\n"));
        }
    }
    out
}
