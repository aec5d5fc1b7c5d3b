//! `COPRO`: coordinate-ascent instruction search (DSPy
//! `dspy/teleprompt/copro_optimizer.py`).
//!
//! Per predictor, `BasicGenerateInstruction` proposes `breadth - 1`
//! instructions (plus the current one); each is scored on the trainset; then
//! for `depth - 1` rounds `GenerateInstructionGivenAttempts` sees the best
//! attempts with their scores and proposes `breadth` more. The best
//! candidate per predictor is installed, predictor by predictor, as DSPy
//! does. Beyond DSPy: the candidates of one round are evaluated together in
//! one worker pool (DSPy scores them one after another).
//!
//! Each candidate also carries DSPy's proposed output-field prefix; the chat
//! adapter does not show prefixes to the LM (as in DSPy), so it is kept in
//! the metadata's attempts only.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::propose::{self, py_float, Call};
use super::{Compiled, Compiler, Data, Optimizer};
use crate::error::{Error, Result};
use crate::evaluate::{evaluate_many, EvalOptions};
use crate::predict::{ProgramState, RunContext};

/// COPRO settings (DSPy's names and defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoproConfig {
    /// New instructions per round (DSPy: must be > 1).
    pub breadth: usize,
    /// Rounds of proposal.
    pub depth: usize,
    /// Temperature of the proposals.
    pub init_temperature: f64,
    /// Keep per-depth score statistics (min, max, average, std) in the metadata.
    pub track_stats: bool,
    /// Errors tolerated per evaluation.
    pub max_errors: Option<usize>,
    /// Unused by COPRO (its proposals are sampled by the LM); accepted so
    /// one `--seed` fits every optimizer.
    pub seed: u64,
}

impl Default for CoproConfig {
    fn default() -> Self {
        CoproConfig {
            breadth: 10,
            depth: 3,
            init_temperature: 1.4,
            track_stats: false,
            max_errors: None,
            seed: 0,
        }
    }
}

/// One scored instruction candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// Predictor name.
    pub predictor: String,
    /// Round (0-based) it was scored in.
    pub depth: usize,
    /// The instruction.
    pub instruction: String,
    /// The proposed output-field prefix.
    pub prefix: String,
    /// Trainset score in percent.
    pub score: f64,
    /// The whole program state it was scored with.
    #[serde(skip)]
    pub state: ProgramState,
}

/// The `copro` optimizer.
pub struct Copro(pub CoproConfig);

#[derive(Clone, Debug)]
struct Cand {
    instruction: String,
    prefix: String,
}

fn stats(scores: &[f64]) -> Value {
    if scores.is_empty() {
        return Value::Null;
    }
    let n = scores.len() as f64;
    let avg = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - avg).powi(2)).sum::<f64>() / n).sqrt();
    json!({
        "max": scores.iter().cloned().fold(f64::MIN, f64::max),
        "average": avg,
        "min": scores.iter().cloned().fold(f64::MAX, f64::min),
        "std": std,
    })
}

impl Optimizer for Copro {
    fn name(&self) -> &'static str {
        "copro"
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    fn compile(&self, cx: &Compiler, student: &ProgramState, data: &Data) -> Result<Compiled> {
        let c = &self.0;
        if c.breadth <= 1 {
            return Err(Error::Config(
                "copro: breadth must be greater than 1".into(),
            ));
        }
        if data.trainset.is_empty() {
            return Err(Error::Config("copro: the trainset is empty".into()));
        }
        if cx.program.is_empty() {
            return Err(Error::Config("copro: the program has no predictors".into()));
        }
        let lm = cx.proposer_lm();
        let trainset = &data.trainset;
        let names: Vec<String> = cx.program.iter().map(|(n, _)| n.clone()).collect();
        let basic: Vec<(String, String)> = cx
            .program
            .iter()
            .map(|(name, p)| {
                let sig = p.signature();
                let instr = student
                    .get(name)
                    .and_then(|s| s.instructions.clone())
                    .unwrap_or_else(|| sig.instructions());
                let prefix = sig.outputs().last().map(|f| f.prefix()).unwrap_or_default();
                (instr, prefix)
            })
            .collect();

        // Round 0 proposals: breadth - 1 new instructions, plus the current one.
        let mut all: Vec<Vec<Cand>> = Vec::new();
        for (i, (instr, prefix)) in basic.iter().enumerate() {
            cx.progress("propose", i, names.len(), "BasicGenerateInstruction".into());
            let outs = propose::call(
                cx,
                &lm,
                Call {
                    sig: propose::basic_generate_instruction(),
                    inputs: [(
                        "basic_instruction".to_string(),
                        Value::String(instr.clone()),
                    )]
                    .into_iter()
                    .collect(),
                    n: (c.breadth - 1) as u32,
                    temperature: c.init_temperature,
                    rollout_id: None,
                    name: "copro.basic_generate_instruction",
                },
            )?;
            let mut cands = candidates(&outs);
            cands.push(Cand {
                instruction: instr.clone(),
                prefix: prefix.clone(),
            });
            all.push(cands);
        }
        let mut latest = all.clone();
        let mut evaluated: Vec<Vec<Attempt>> = vec![Vec::new(); names.len()];
        let mut current = student.clone();
        let mut evaluations = 0;
        let mut stats_latest: Vec<Value> = Vec::new();
        let mut stats_best: Vec<Value> = Vec::new();
        let options = EvalOptions {
            threads: cx.threads,
            failure_score: 0.0,
            // DSPy's ParallelExecutor stops at its `max_errors`-th error;
            // run_pool stops past the count it is given.
            max_errors: c.max_errors.map(|max| max.saturating_sub(1)),
        };
        for d in 0..c.depth {
            for (p, name) in names.iter().enumerate() {
                let pool = if names.len() > 1 { &all[p] } else { &latest[p] };
                let states: Vec<ProgramState> = pool
                    .iter()
                    .map(|cand| {
                        let mut st = current.get(name).cloned().unwrap_or_default();
                        st.instructions = Some(cand.instruction.clone());
                        current.with(name, st)
                    })
                    .collect();
                let ctxs: Vec<RunContext> = states
                    .iter()
                    .map(|s| RunContext {
                        state: Arc::new(s.clone()),
                        ..cx.ctx.clone()
                    })
                    .collect();
                let phase = format!("depth {}/{} {name}", d + 1, c.depth);
                let reports = evaluate_many(
                    &cx.task(),
                    trainset,
                    &cx.metric,
                    &ctxs,
                    &options,
                    cx.cancel,
                    &mut |_, pr| {
                        cx.progress(&phase, pr.done, pr.total, format!("{:.1}%", pr.percent()))
                    },
                );
                cx.check_cancel()?;
                evaluations += states.len();
                let mut latest_scores = Vec::new();
                for (i, ((cand, state), report)) in pool.iter().zip(states).zip(reports).enumerate()
                {
                    if report.hit_max_errors {
                        // Its own budget: the other candidates' evaluation went on.
                        return Err(Error::Config(format!(
                            "copro: evaluation of candidate {i} of {name} stopped after {} errors \
                             (max_errors {}); first: {}",
                            report.errored,
                            c.max_errors.unwrap_or_default(),
                            report.first_error().unwrap_or_default()
                        )));
                    }
                    cx.stats.add_errors(&report);
                    let score = report.score;
                    let entry = Attempt {
                        predictor: name.clone(),
                        depth: d,
                        instruction: cand.instruction.clone(),
                        prefix: cand.prefix.clone(),
                        score,
                        state,
                    };
                    match evaluated[p]
                        .iter_mut()
                        .find(|a| a.instruction == cand.instruction && a.prefix == cand.prefix)
                    {
                        Some(old) if old.score >= score => {}
                        Some(old) => *old = entry,
                        None => evaluated[p].push(entry),
                    }
                    if pool.len().saturating_sub(c.breadth) <= i {
                        latest_scores.push(score);
                    }
                }
                if c.track_stats {
                    stats_latest.push(
                        json!({"predictor": name, "depth": d, "stats": stats(&latest_scores)}),
                    );
                }
                let best = evaluated[p]
                    .iter()
                    .fold(None::<&Attempt>, |b, a| match b {
                        Some(b) if b.score >= a.score => Some(b),
                        _ => Some(a),
                    })
                    .expect("at least one candidate was scored");
                cx.note(
                    "copro",
                    format!(
                        "depth {}/{}: {name} best {:.2}%",
                        d + 1,
                        c.depth,
                        best.score
                    ),
                );
                let mut st = current.get(name).cloned().unwrap_or_default();
                st.instructions = Some(best.instruction.clone());
                current = current.with(name, st);
            }
            if d + 1 == c.depth {
                break;
            }
            // Next round: proposals that see the best attempts so far.
            for (p, name) in names.iter().enumerate() {
                let mut best: Vec<&Attempt> = evaluated[p].iter().collect();
                best.sort_by(|a, b| b.score.total_cmp(&a.score));
                let shortest = best.len().min(c.breadth);
                if c.track_stats {
                    let scores: Vec<f64> = best.iter().take(10).map(|a| a.score).collect();
                    stats_best
                        .push(json!({"predictor": name, "depth": d, "stats": stats(&scores)}));
                }
                let mut attempts = Vec::new();
                for i in (0..shortest).rev() {
                    let k = shortest - i;
                    attempts.push(format!("Instruction #{k}: {}", best[i].instruction));
                    attempts.push(format!("Prefix #{k}: {}", best[i].prefix));
                    attempts.push(format!("Resulting Score #{k}: {}", py_float(best[i].score)));
                }
                cx.progress(
                    "propose",
                    p,
                    names.len(),
                    "GenerateInstructionGivenAttempts".into(),
                );
                let outs = propose::call(
                    cx,
                    &lm,
                    Call {
                        sig: propose::generate_instruction_given_attempts(),
                        inputs: [(
                            "attempted_instructions".to_string(),
                            Value::String(attempts.join("\n")),
                        )]
                        .into_iter()
                        .collect(),
                        n: c.breadth as u32,
                        temperature: c.init_temperature,
                        rollout_id: None,
                        name: "copro.generate_instruction_given_attempts",
                    },
                )?;
                let new = candidates(&outs);
                all[p].extend(new.iter().cloned());
                latest[p] = new;
            }
        }
        // Every candidate, best first; the first (earliest among equals) wins.
        let mut ranked: Vec<&Attempt> = evaluated.iter().flatten().collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        let best = ranked[0];
        let summary = vec![format!(
            "best candidate: {:.2}% ({} distinct candidates, {} evaluations of {} examples)",
            best.score,
            ranked.len(),
            evaluations,
            trainset.len()
        )];
        let attempts: Vec<&Attempt> = ranked.clone();
        let mut metadata = json!({
            "best_score": best.score,
            "evaluations": evaluations,
            "attempts": attempts,
        });
        if c.track_stats {
            metadata["results_best"] = Value::Array(stats_best);
            metadata["results_latest"] = Value::Array(stats_latest);
        }
        Ok(Compiled {
            state: best.state.clone(),
            mode: super::Mode::Fixed,
            metadata,
            summary,
        })
    }
}

/// Candidates from proposal completions (quotes and label prefixes stripped).
fn candidates(outs: &[crate::adapter::Fields]) -> Vec<Cand> {
    let get = |o: &crate::adapter::Fields, k: &str| match o.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    outs.iter()
        .map(|o| Cand {
            instruction: get(o, "proposed_instruction")
                .trim_matches('"')
                .trim()
                .to_string(),
            prefix: get(o, "proposed_prefix_for_output_field")
                .trim_matches('"')
                .trim()
                .to_string(),
        })
        .filter(|c| !c.instruction.is_empty())
        .collect()
}
