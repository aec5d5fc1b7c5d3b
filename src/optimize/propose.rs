//! Instruction proposal, shared by COPRO and MIPROv2: DSPy's
//! `GroundedProposer` (`dspy/propose/grounded_proposer.py`), its dataset
//! summary (`dspy/propose/dataset_summary_generator.py`) and COPRO's two
//! signatures (`dspy/teleprompt/copro_optimizer.py`), with DSPy's exact
//! instructions and field descriptions.
//!
//! Every proposer call is an ordinary predictor call ([`crate::predict::call`])
//! on the prompt LM: cached, recorded in the LM's history
//! (`inspect_history`), counted in its usage, and holding a slot of the
//! compile's thread budget. The program code the describers see is the
//! pipeline's Rhai source, where DSPy shows Python pseudo-code.

use std::sync::Arc;

use serde_json::{json, Value};

use super::Compiler;
use crate::adapter::Fields;
use crate::data::{Example, PyRandom};
use crate::error::{Error, Result};
use crate::lm::{Lm, LmSettings};
use crate::predict::{self, Demo, Predictor, PredictorKind, ProgramState, RunContext};
use crate::signature::{Field, FieldType, Signature};

/// DSPy's proposal tips (`grounded_proposer.TIPS`), in its order.
pub const TIPS: [(&str, &str); 6] = [
    ("none", ""),
    (
        "creative",
        "Don't be afraid to be creative when creating the new instruction!",
    ),
    ("simple", "Keep the instruction clear and concise."),
    (
        "description",
        "Make sure your instruction is very informative and descriptive.",
    ),
    (
        "high_stakes",
        "The instruction should include a high stakes scenario in which the LM must solve the task!",
    ),
    (
        "persona",
        "Include a persona that is relevant to the task in the instruction (ie. \"You are a ...\")",
    ),
];

/// Most earlier instructions shown in `previous_instructions` (DSPy's
/// `MAX_INSTRUCT_IN_HISTORY`).
pub const MAX_INSTRUCT_IN_HISTORY: usize = 5;

fn field(name: &str, desc: Option<&str>) -> Field {
    let mut f = Field::new(name, FieldType::Str);
    f.desc = desc.map(str::to_string);
    f
}

fn signature(
    instructions: &str,
    inputs: &[(&str, Option<&str>)],
    outputs: &[(&str, &str)],
) -> Signature {
    Signature::from_fields(
        inputs.iter().map(|(n, d)| field(n, *d)).collect(),
        outputs.iter().map(|(n, d)| field(n, Some(d))).collect(),
        Some(instructions.to_string()),
    )
    .expect("the proposer signatures are valid")
}

const PROGRAM_CODE_DESC: &str =
    "Pseudocode for a language model program designed to solve a particular task.";
const PROGRAM_SUMMARY_DESC: &str =
    "Summary of the task the program is designed to solve, and how it goes about solving it.";

/// DSPy `DatasetDescriptor`.
pub fn dataset_descriptor() -> Signature {
    signature(
        "Given several examples from a dataset please write observations about trends that hold for most or all of the samples. \
         Some areas you may consider in your observations: topics, content, syntax, conciseness, etc. \
         It will be useful to make an educated guess as to the nature of the task this dataset will enable. Don't be afraid to be creative",
        &[("examples", Some("Sample data points from the dataset"))],
        &[(
            "observations",
            "Somethings that holds true for most or all of the data you observed",
        )],
    )
}

/// DSPy `DatasetDescriptorWithPriorObservations` (its typos and double space kept).
pub fn dataset_descriptor_with_prior_observations() -> Signature {
    signature(
        "Given several examples from a dataset please write observations about trends that hold for most or all of the samples. \
         I will also provide you with a few observations I have already made.  Please add your own observations or if you feel the observations are comprehensive say 'COMPLETE' \
         Some areas you may consider in your observations: topics, content, syntax, conciceness, etc. \
         It will be useful to make an educated guess as to the nature of the task this dataset will enable. Don't be afraid to be creative",
        &[
            ("examples", Some("Sample data points from the dataset")),
            (
                "prior_observations",
                Some("Some prior observations I made about the data"),
            ),
        ],
        &[(
            "observations",
            "Somethings that holds true for most or all of the data you observed or COMPLETE if you have nothing to add",
        )],
    )
}

/// DSPy `ObservationSummarizer`.
pub fn observation_summarizer() -> Signature {
    signature(
        "Given a series of observations I have made about my dataset, please summarize them into a brief 2-3 sentence summary which highlights only the most important details.",
        &[("observations", Some("Observations I have made about my dataset"))],
        &[(
            "summary",
            "Two to Three sentence summary of only the most significant highlights of my observations",
        )],
    )
}

/// DSPy `DescribeProgram`.
pub fn describe_program() -> Signature {
    signature(
        "Below is some pseudo-code for a pipeline that solves tasks with calls to language models. Please describe what type of task this program appears to be designed to solve, and how it appears to work.",
        &[
            ("program_code", Some(PROGRAM_CODE_DESC)),
            ("program_example", Some("An example of the program in use.")),
        ],
        &[(
            "program_description",
            "Describe what task the program is designed to solve, and how it goes about solving this task.",
        )],
    )
}

/// DSPy `DescribeModule`.
pub fn describe_module() -> Signature {
    signature(
        "Below is some pseudo-code for a pipeline that solves tasks with calls to language models. Please describe the purpose of one of the specified module in this pipeline.",
        &[
            ("program_code", Some(PROGRAM_CODE_DESC)),
            ("program_example", Some("An example of the program in use.")),
            ("program_description", Some(PROGRAM_SUMMARY_DESC)),
            (
                "module",
                Some("The module in the program that we want to describe."),
            ),
        ],
        &[(
            "module_description",
            "Description of the module's role in the broader program.",
        )],
    )
}

/// DSPy `generate_instruction_class(...)`'s `GenerateSingleModuleInstruction`
/// with every part switched on or off as DSPy does.
pub fn generate_single_module_instruction(
    use_dataset_summary: bool,
    program_aware: bool,
    use_instruct_history: bool,
    use_tip: bool,
) -> Signature {
    let mut inputs: Vec<(&str, Option<&str>)> = Vec::new();
    if use_dataset_summary {
        inputs.push((
            "dataset_description",
            Some("A description of the dataset that we are using."),
        ));
    }
    if program_aware {
        inputs.push((
            "program_code",
            Some("Language model program designed to solve a particular task."),
        ));
        inputs.push(("program_description", Some(PROGRAM_SUMMARY_DESC)));
        inputs.push(("module", Some("The module to create an instruction for.")));
        inputs.push((
            "module_description",
            Some("Description of the module to create an instruction for."),
        ));
    }
    inputs.push(("task_demos", Some("Example inputs/outputs of our module.")));
    if use_instruct_history {
        inputs.push((
            "previous_instructions",
            Some("Previous instructions we've attempted, along with their associated scores."),
        ));
    }
    inputs.push(("basic_instruction", Some("Basic instruction.")));
    if use_tip {
        inputs.push((
            "tip",
            Some("A suggestion for how to go about generating the new instruction."),
        ));
    }
    signature(
        "Use the information below to learn about a task that we are trying to solve using calls to an LM, then generate a new instruction that will be used to prompt a Language Model to better solve the task.",
        &inputs,
        &[(
            "proposed_instruction",
            "Propose an instruction that will be used to prompt a Language Model to perform this task.",
        )],
    )
}

const PROPOSED_INSTRUCTION_DESC: &str = "The improved instructions for the language model";
const PROPOSED_PREFIX_DESC: &str =
    "The string at the end of the prompt, which will help the model start solving the task";

/// COPRO's `BasicGenerateInstruction`.
pub fn basic_generate_instruction() -> Signature {
    signature(
        "You are an instruction optimizer for large language models. I will give you a ``signature`` of fields (inputs and outputs) in English. Your task is to propose an instruction that will lead a good language model to perform the task well. Don't be afraid to be creative.",
        &[(
            "basic_instruction",
            Some("The initial instructions before optimization"),
        )],
        &[
            ("proposed_instruction", PROPOSED_INSTRUCTION_DESC),
            ("proposed_prefix_for_output_field", PROPOSED_PREFIX_DESC),
        ],
    )
}

/// COPRO's `GenerateInstructionGivenAttempts`.
pub fn generate_instruction_given_attempts() -> Signature {
    signature(
        "You are an instruction optimizer for large language models. I will give some task instructions I've tried, along with their corresponding validation scores. The instructions are arranged in increasing order based on their scores, where higher scores indicate better quality.\n\n\
         Your task is to propose a new instruction that will lead a good language model to perform the task even better. Don't be afraid to be creative.",
        &[("attempted_instructions", None)],
        &[
            ("proposed_instruction", PROPOSED_INSTRUCTION_DESC),
            ("proposed_prefix_for_output_field", PROPOSED_PREFIX_DESC),
        ],
    )
}

/// DSPy `strip_prefix`: drops a leading `Label:` of up to five words (and
/// `*`/spaces before it), then surrounding double quotes.
pub fn strip_prefix(text: &str) -> String {
    let trimmed = text.trim_start_matches(|c: char| c == '*' || c.is_whitespace());
    let rest = match trimmed.find(':') {
        Some(i) => {
            let label = &trimmed[..i];
            let words: Vec<&str> = label.split_whitespace().collect();
            let wordy = !label.is_empty()
                && !label.ends_with(char::is_whitespace)
                && words.len() <= 5
                && words
                    .iter()
                    .all(|w| w.chars().all(|c| c.is_alphanumeric() || "_'-".contains(c)));
            if wordy {
                trimmed[i + 1..].trim_start()
            } else {
                text
            }
        }
        None => text,
    };
    rest.trim_matches('"').to_string()
}

/// DSPy `create_example_string`: `Prefix: value` per signature field.
pub fn example_string(sig: &Signature, fields: &Fields) -> String {
    sig.fields()
        .map(|f| {
            let value = match fields.get(&f.name) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "None".into(),
            };
            format!("{} {value}", f.prefix())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Examples as DSPy prints a list of them (`repr(trainset[a:b])` with input
/// keys sorted): `[Example({'question': '...', 'answer': '...'}) (input_keys={'question'}), ...]`.
pub fn examples_repr(examples: &[Example]) -> String {
    let py = |v: &Value| match v {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => other.to_string(),
    };
    let items: Vec<String> = examples
        .iter()
        .map(|ex| {
            let fields: Vec<String> = ex
                .fields()
                .iter()
                .map(|(k, v)| format!("'{k}': {}", py(v)))
                .collect();
            let mut keys: Vec<String> = ex.inputs().keys().map(|k| format!("'{k}'")).collect();
            keys.sort();
            format!(
                "Example({{{}}}) (input_keys={{{}}})",
                fields.join(", "),
                keys.join(", ")
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// One proposer call: a Predict on `sig` with the prompt LM, `n`
/// completions at `temperature`, a rollout id to get fresh samples.
pub struct Call<'a> {
    /// Signature to call.
    pub sig: Signature,
    /// Input values.
    pub inputs: Fields,
    /// Completions wanted.
    pub n: u32,
    /// Sampling temperature.
    pub temperature: f64,
    /// DSPy's `rollout_id` (a fresh cache key), if any.
    pub rollout_id: Option<u64>,
    /// Display name in traces/history.
    pub name: &'a str,
}

/// Runs one proposer call on the prompt LM inside the compile's budget;
/// returns every completion's outputs.
pub fn call(cx: &Compiler, lm: &Option<Arc<Lm>>, c: Call) -> Result<Vec<Fields>> {
    let settings = LmSettings {
        temperature: Some(c.temperature),
        max_tokens: None,
        n: (c.n > 1).then_some(c.n),
    };
    let predictor = Predictor::new(PredictorKind::Predict, c.sig, settings)?;
    predictor.assign_name(c.name);
    let mut ctx = RunContext::new(lm.clone(), Arc::new(ProgramState::default()));
    ctx.rollout_id = c.rollout_id;
    let prediction = {
        let _slot = cx.budget.acquire();
        predict::call(&predictor, &ctx, &c.inputs)?
    };
    let mut outputs = match prediction.get("completions") {
        Some(Value::Array(all)) => all
            .iter()
            .filter_map(|v| v.as_object().cloned())
            .collect::<Vec<_>>(),
        _ => vec![prediction.clone()],
    };
    for o in &mut outputs {
        o.remove("completions");
    }
    Ok(outputs)
}

fn text(fields: &Fields, name: &str) -> String {
    match fields.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn inputs(pairs: &[(&str, String)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect()
}

/// DSPy `create_dataset_summary`: DatasetDescriptor on the first batch,
/// DatasetDescriptorWithPriorObservations on later ones (at most 10 calls,
/// stopping after 5 `COMPLETE` answers), then ObservationSummarizer.
/// Errors after the first call keep the observations so far, as DSPy does.
pub fn dataset_summary(
    cx: &Compiler,
    lm: &Option<Arc<Lm>>,
    trainset: &[Example],
    view_data_batch_size: usize,
) -> Result<String> {
    let batch = view_data_batch_size.max(1);
    let upper = trainset.len().min(batch);
    cx.progress("propose", 0, 0, "dataset summary".into());
    let first = call(
        cx,
        lm,
        Call {
            sig: dataset_descriptor(),
            inputs: inputs(&[("examples", examples_repr(&trainset[..upper]))]),
            n: 1,
            temperature: 1.0,
            rollout_id: None,
            name: "propose.dataset_descriptor",
        },
    )?;
    let mut observations = text(&first[0], "observations");
    let mut skips = 0;
    let mut calls = 0;
    let mut b = batch;
    while b < trainset.len() {
        calls += 1;
        if calls >= 10 {
            break;
        }
        let upper = trainset.len().min(b + batch);
        let out = call(
            cx,
            lm,
            Call {
                sig: dataset_descriptor_with_prior_observations(),
                inputs: inputs(&[
                    ("examples", examples_repr(&trainset[b..upper])),
                    ("prior_observations", observations.clone()),
                ]),
                n: 1,
                temperature: 1.0,
                rollout_id: None,
                name: "propose.dataset_descriptor",
            },
        );
        let Ok(out) = out else { break };
        let new = text(&out[0], "observations");
        b += batch;
        if new.len() >= 8 && new[..8].eq_ignore_ascii_case("COMPLETE") {
            skips += 1;
            if skips >= 5 {
                break;
            }
            continue;
        }
        observations.push_str(&new);
    }
    let summary = call(
        cx,
        lm,
        Call {
            sig: observation_summarizer(),
            inputs: inputs(&[("observations", observations)]),
            n: 1,
            temperature: 1.0,
            rollout_id: None,
            name: "propose.observation_summarizer",
        },
    )?;
    Ok(strip_prefix(&text(&summary[0], "summary")))
}

/// GroundedProposer settings (MIPROv2's `*_aware_proposer` keys).
#[derive(Clone, Debug)]
pub struct ProposerConfig {
    /// Summarize the trainset first (DSPy `data_aware_proposer`).
    pub data_aware: bool,
    /// Describe the program and module (DSPy `program_aware_proposer`).
    pub program_aware: bool,
    /// Draw a random tip per proposal (DSPy `tip_aware_proposer`).
    pub tip_aware: bool,
    /// Show bootstrapped demos (DSPy `fewshot_aware_proposer`).
    pub fewshot_aware: bool,
    /// Examples per dataset-summary batch.
    pub view_data_batch_size: usize,
    /// Demos shown per proposal (DSPy: 3).
    pub num_demos_in_context: usize,
    /// Proposal temperature.
    pub init_temperature: f64,
}

impl Default for ProposerConfig {
    fn default() -> Self {
        ProposerConfig {
            data_aware: true,
            program_aware: true,
            tip_aware: true,
            fewshot_aware: true,
            view_data_batch_size: 10,
            num_demos_in_context: 3,
            init_temperature: 1.0,
        }
    }
}

/// One proposal job, with its random choices drawn up front (in DSPy's
/// order) so proposals can run in parallel and stay deterministic.
struct Job {
    predictor: usize,
    demo_set: usize,
    tip: &'static str,
    rollout_id: u64,
}

/// DSPy `GroundedProposer.propose_instructions_for_program`: `n`
/// instructions per predictor (one per demo set, tips drawn at random),
/// each from DescribeProgram → DescribeModule → GenerateSingleModuleInstruction.
/// `demo_candidates[p][s]` is predictor `p`'s demo set `s`; `history[p]`
/// holds earlier (instruction, score) pairs. Index 0 of each list is
/// replaced by the predictor's current instruction, as MIPROv2 does.
#[allow(clippy::too_many_arguments)]
pub fn propose_instructions(
    cx: &Compiler,
    config: &ProposerConfig,
    trainset: &[Example],
    demo_candidates: &[Vec<Vec<Demo>>],
    history: &[Vec<(String, f64)>],
    n: usize,
    student: &ProgramState,
    rng: &mut PyRandom,
) -> Result<Vec<Vec<String>>> {
    let lm = cx.proposer_lm();
    if lm.is_none() {
        return Err(crate::lm::LmError::NotConfigured.into());
    }
    let data_summary = if config.data_aware && !trainset.is_empty() {
        match dataset_summary(cx, &lm, trainset, config.view_data_batch_size) {
            Ok(s) => Some(s),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(_) => None, // DSPy runs without the data summary
        }
    } else {
        None
    };
    let use_history = rng.random() < 0.5;
    let num_sets = demo_candidates.first().map(|s| s.len().max(1)).unwrap_or(n);
    let mut jobs = Vec::new();
    for p in 0..cx.program.len() {
        for s in 0..num_sets.min(n) {
            let tip = if config.tip_aware {
                rng.choice(&TIPS).map(|t| t.1).unwrap_or("")
            } else {
                ""
            };
            let rollout_id = rng.randint(0, 1_000_000_000) as u64;
            jobs.push(Job {
                predictor: p,
                demo_set: s,
                tip,
                rollout_id,
            });
        }
    }
    let total = jobs.len();
    let mut results: Vec<Option<Result<String>>> = (0..total).map(|_| None).collect();
    let mut done = 0;
    let job = |i: usize| {
        let j = &jobs[i];
        propose_one(
            cx,
            &lm,
            config,
            data_summary.as_deref(),
            demo_candidates,
            history.get(j.predictor).map(Vec::as_slice).unwrap_or(&[]),
            use_history,
            student,
            j,
        )
    };
    crate::parallel::run_indexed(total, cx.threads, &[cx.cancel], job, |i, r| {
        done += 1;
        cx.progress("propose", done, total, "instructions".into());
        results[i] = Some(r);
        true
    });
    cx.check_cancel()?;
    let mut out: Vec<Vec<String>> = vec![Vec::new(); cx.program.len()];
    for (j, r) in jobs.iter().zip(results) {
        out[j.predictor].push(r.unwrap_or(Err(Error::Interrupted))?);
    }
    for (p, (name, predictor)) in cx.program.iter().enumerate() {
        let current = student
            .get(name)
            .and_then(|s| s.instructions.clone())
            .unwrap_or_else(|| predictor.signature().instructions());
        match out[p].first_mut() {
            Some(first) => *first = current,
            None => out[p].push(current),
        }
    }
    Ok(out)
}

/// The instruction history string DSPy builds per predictor (average score
/// per instruction, best last, at most [`MAX_INSTRUCT_IN_HISTORY`]).
pub fn history_string(history: &[(String, f64)]) -> String {
    let mut agg: Vec<(String, f64, usize)> = Vec::new();
    for (instr, score) in history {
        match agg.iter_mut().find(|(i, _, _)| i == instr) {
            Some(e) => {
                e.1 += score;
                e.2 += 1;
            }
            None => agg.push((instr.clone(), *score, 1)),
        }
    }
    let mut avg: Vec<(String, f64)> = agg.into_iter().map(|(i, s, n)| (i, s / n as f64)).collect();
    avg.sort_by(|a, b| a.1.total_cmp(&b.1));
    let start = avg.len().saturating_sub(MAX_INSTRUCT_IN_HISTORY);
    avg[start..]
        .iter()
        .map(|(i, s)| format!("{i} | Score: {}", py_float(*s)))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[allow(clippy::too_many_arguments)]
fn propose_one(
    cx: &Compiler,
    lm: &Option<Arc<Lm>>,
    config: &ProposerConfig,
    data_summary: Option<&str>,
    demo_candidates: &[Vec<Vec<Demo>>],
    history: &[(String, f64)],
    use_history: bool,
    student: &ProgramState,
    job: &Job,
) -> Result<String> {
    let (name, predictor) = &cx.program[job.predictor];
    let sig = predictor.signature();
    let basic_instruction = student
        .get(name)
        .and_then(|s| s.instructions.clone())
        .unwrap_or_else(|| sig.instructions());
    // Demos: the chosen set first, then the following and earlier sets.
    let mut task_demos = String::new();
    if config.fewshot_aware {
        if let Some(sets) = demo_candidates.get(job.predictor) {
            let s = job.demo_set.min(sets.len().saturating_sub(1));
            let order = sets
                .iter()
                .skip(s)
                .chain(sets.iter().take(s))
                .flat_map(|set| set.iter().filter(|d| d.augmented))
                .take(config.num_demos_in_context);
            let strings: Vec<String> = order.map(|d| example_string(sig, &d.fields)).collect();
            if !strings.is_empty() {
                task_demos = strings.join("\n\n") + "\n\n";
            }
        }
    }
    if task_demos.trim().is_empty() || job.demo_set == 0 {
        task_demos = "No task demos provided.".into();
    }
    let mut program_description = "Not available".to_string();
    let mut module_code = "Not provided".to_string();
    let mut module_description = "Not provided".to_string();
    let mut program_aware = config.program_aware && !cx.source.trim().is_empty();
    if program_aware {
        let described = (|| -> Result<(String, String, String)> {
            let out = call(
                cx,
                lm,
                Call {
                    sig: describe_program(),
                    inputs: inputs(&[
                        ("program_code", cx.source.clone()),
                        ("program_example", task_demos.clone()),
                    ]),
                    n: 1,
                    temperature: 1.0,
                    rollout_id: None,
                    name: "propose.describe_program",
                },
            )?;
            let program_description = strip_prefix(&text(&out[0], "program_description"));
            let ins: Vec<&str> = sig.inputs().iter().map(|f| f.name.as_str()).collect();
            let outs: Vec<&str> = sig.outputs().iter().map(|f| f.name.as_str()).collect();
            let kind = match predictor.kind() {
                PredictorKind::Predict => "Predict",
                PredictorKind::ChainOfThought => "ChainOfThought",
            };
            let module_code = format!("{kind}({}) -> {}", ins.join(", "), outs.join(", "));
            let out = call(
                cx,
                lm,
                Call {
                    sig: describe_module(),
                    inputs: inputs(&[
                        ("program_code", cx.source.clone()),
                        ("program_example", task_demos.clone()),
                        ("program_description", program_description.clone()),
                        ("module", module_code.clone()),
                    ]),
                    n: 1,
                    temperature: 1.0,
                    rollout_id: None,
                    name: "propose.describe_module",
                },
            )?;
            Ok((
                program_description,
                module_code,
                text(&out[0], "module_description"),
            ))
        })();
        match described {
            Ok((p, m, d)) => {
                program_description = p;
                module_code = m;
                module_description = d;
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(_) => program_aware = false, // DSPy goes on without it
        }
    }
    let history_text = history_string(history);
    let with_history = use_history && !history_text.is_empty();
    let sig_gen = generate_single_module_instruction(
        data_summary.is_some(),
        program_aware,
        with_history,
        !job.tip.is_empty(),
    );
    let mut values = vec![
        ("task_demos", task_demos),
        ("basic_instruction", basic_instruction),
    ];
    if let Some(d) = data_summary {
        values.push(("dataset_description", d.to_string()));
    }
    if program_aware {
        values.push(("program_code", cx.source.clone()));
        values.push(("program_description", program_description));
        values.push(("module", module_code));
        values.push(("module_description", module_description));
    }
    if with_history {
        values.push(("previous_instructions", history_text));
    }
    if !job.tip.is_empty() {
        values.push(("tip", job.tip.to_string()));
    }
    let out = call(
        cx,
        lm,
        Call {
            sig: sig_gen,
            inputs: inputs(&values),
            n: 1,
            temperature: config.init_temperature,
            rollout_id: Some(job.rollout_id),
            name: "propose.generate_instruction",
        },
    )?;
    Ok(strip_prefix(&text(&out[0], "proposed_instruction")))
}

/// A float as Python prints it (`60.0`, `61.5`).
pub fn py_float(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// A JSON record of a signature (instructions and fields), for tests
/// comparing with DSPy's.
pub fn describe(sig: &Signature) -> Value {
    let f = |fields: &[Field]| -> Vec<Value> {
        fields
            .iter()
            .map(|f| json!([f.name, f.desc_or_placeholder(), f.prefix()]))
            .collect()
    };
    json!({
        "instructions": sig.instructions(),
        "inputs": f(sig.inputs()),
        "outputs": f(sig.outputs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_matches_dspy() {
        assert_eq!(strip_prefix("Proposed Instruction: Do it."), "Do it.");
        assert_eq!(strip_prefix("**Instruction: \"Do it.\""), "Do it.");
        assert_eq!(strip_prefix("Answer the question."), "Answer the question.");
        assert_eq!(
            strip_prefix("one two three four five six: x"),
            "one two three four five six: x"
        );
    }

    #[test]
    fn history_keeps_the_best_five_averaged_best_last() {
        let h: Vec<(String, f64)> =
            vec![("a".into(), 10.0), ("b".into(), 50.0), ("a".into(), 30.0)];
        assert_eq!(history_string(&h), "a | Score: 20.0\n\nb | Score: 50.0");
    }
}
