//! GEPA's merge (the `gepa` package's `proposer/merge.py`): two undominated
//! candidates with a common ancestor that both beat are combined predictor
//! by predictor — where one descendant kept the ancestor's instruction,
//! take the other's; where both changed it, take the better-scoring one's —
//! scored on five validation instances chosen to separate the two, and
//! kept when it does at least as well as the better parent there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{append_candidate, save, GepaConfig, GepaState};
use crate::data::{Example, PyRandom};
use crate::error::Result;
use crate::optimize::feedback::{rollouts, Tracing};
use crate::optimize::Compiler;
use crate::predict::RunContext;

/// Validation instances a merge is scored on (`num_subsample_ids`).
const SUBSAMPLE: usize = 5;
/// Attempts at finding a pair (`max_attempts`).
const ATTEMPTS: usize = 10;

type Candidate = BTreeMap<String, String>;

fn ancestors(parents: &[Vec<usize>], node: usize, found: &mut BTreeSet<usize>) {
    for &p in &parents[node] {
        if found.insert(p) {
            ancestors(parents, p, found);
        }
    }
}

/// Whether some predictor kept the ancestor's text in one descendant and
/// differs between the two (`does_triplet_have_desirable_predictors`).
fn desirable(cands: &[Candidate], ancestor: usize, i: usize, j: usize) -> bool {
    cands[ancestor].iter().any(|(name, anc)| {
        let (a, b) = (&cands[i][name], &cands[j][name]);
        (anc == a || anc == b) && a != b
    })
}

/// A pair of undominated candidates and a common ancestor worth merging
/// (`find_common_ancestor_pair`).
fn find_pair(
    s: &GepaState,
    rng: &mut PyRandom,
    programs: &[usize],
    scores: &[f64],
) -> Option<(usize, usize, usize)> {
    for _ in 0..ATTEMPTS {
        if programs.len() < 2 {
            return None;
        }
        let pick = rng.sample(programs, 2);
        let (mut i, mut j) = (pick[0], pick[1]);
        if j < i {
            std::mem::swap(&mut i, &mut j);
        }
        let (mut ai, mut aj) = (BTreeSet::new(), BTreeSet::new());
        ancestors(&s.parents, i, &mut ai);
        ancestors(&s.parents, j, &mut aj);
        if ai.contains(&j) || aj.contains(&i) {
            continue;
        }
        let common: Vec<usize> = ai
            .intersection(&aj)
            .copied()
            .filter(|&a| {
                !s.merges_performed.contains(&(i, j, a))
                    && scores[a] <= scores[i]
                    && scores[a] <= scores[j]
                    && desirable(&s.candidates, a, i, j)
            })
            .collect();
        if common.is_empty() {
            continue;
        }
        // rng.choices(common, weights=scores): one draw weighted by score.
        let total: f64 = common.iter().map(|&a| scores[a]).sum();
        let mut x = rng.random() * total;
        let mut chosen = *common.last().expect("non-empty");
        for &a in &common {
            x -= scores[a];
            if x < 0.0 {
                chosen = a;
                break;
            }
        }
        return Some((i, j, chosen));
    }
    None
}

/// Five validation instances: some where `i` wins, some where `j` wins,
/// some ties (`select_eval_subsample_for_merged_program`).
fn subsample(a: &[f64], b: &[f64], rng: &mut PyRandom) -> Vec<usize> {
    let ids: Vec<usize> = (0..a.len()).collect();
    let buckets = [
        ids.iter()
            .copied()
            .filter(|&k| a[k] > b[k])
            .collect::<Vec<_>>(),
        ids.iter().copied().filter(|&k| b[k] > a[k]).collect(),
        ids.iter().copied().filter(|&k| a[k] == b[k]).collect(),
    ];
    let each = SUBSAMPLE.div_ceil(3).max(1);
    let mut chosen: Vec<usize> = Vec::new();
    for bucket in &buckets {
        if chosen.len() >= SUBSAMPLE {
            break;
        }
        let free: Vec<usize> = bucket
            .iter()
            .copied()
            .filter(|k| !chosen.contains(k))
            .collect();
        let take = free.len().min(each).min(SUBSAMPLE - chosen.len());
        chosen.extend(rng.sample(&free, take));
    }
    let rest = SUBSAMPLE - chosen.len();
    if rest > 0 {
        let unused: Vec<usize> = ids
            .iter()
            .copied()
            .filter(|k| !chosen.contains(k))
            .collect();
        if unused.len() >= rest {
            chosen.extend(rng.sample(&unused, rest));
        }
    }
    chosen.truncate(SUBSAMPLE);
    chosen
}

/// Tries a scheduled merge. Returns whether one was proposed (then the
/// iteration ends, as in GEPA, whether or not it was kept).
#[allow(clippy::too_many_arguments)]
pub(super) fn attempt(
    cx: &Compiler,
    s: &mut GepaState,
    rng: &mut PyRandom,
    valset: &[Example],
    budget: usize,
    config: &GepaConfig,
    state_of: &dyn Fn(&Candidate) -> RunContext,
    log: Option<&Path>,
) -> Result<bool> {
    if valset.len() < SUBSAMPLE || s.total_metric_calls + SUBSAMPLE + valset.len() > budget {
        return Ok(false);
    }
    let scores = s.aggregate_scores();
    let programs = s.front.dominators(&scores);
    if programs.len() < 2 || s.parents.len() < 3 {
        return Ok(false);
    }
    let mut found = None;
    for _ in 0..ATTEMPTS {
        let Some((i, j, anc)) = find_pair(s, rng, &programs, &scores) else {
            continue;
        };
        let mut merged = s.candidates[anc].clone();
        let mut sources = Vec::new();
        for (name, a) in &s.candidates[anc] {
            let (ti, tj) = (&s.candidates[i][name], &s.candidates[j][name]);
            let from = if (a == ti || a == tj) && ti != tj {
                if a == ti {
                    j
                } else {
                    i
                }
            } else if a != ti && a != tj {
                if scores[i] > scores[j] {
                    i
                } else if scores[j] > scores[i] {
                    j
                } else {
                    *rng.choice(&[i, j]).expect("two")
                }
            } else {
                i
            };
            merged.insert(name.clone(), s.candidates[from][name].clone());
            sources.push(from);
        }
        if s.merge_descriptions.contains(&(i, j, sources.clone())) {
            continue;
        }
        s.merge_descriptions.push((i, j, sources));
        s.merges_performed.push((i, j, anc));
        found = Some((i, j, merged));
        break;
    }
    let Some((i, j, merged)) = found else {
        return Ok(false);
    };
    let ids = subsample(&s.val_subscores[i], &s.val_subscores[j], rng);
    let ctx = state_of(&merged);
    let jobs: Vec<(RunContext, &Example)> =
        ids.iter().map(|&k| (ctx.clone(), &valset[k])).collect();
    let runs = rollouts(cx, &jobs, Tracing::Off, config.failure_score)?;
    s.total_metric_calls += runs.len();
    let new: f64 = runs.iter().map(|r| r.score).sum();
    let sum_of = |p: usize| ids.iter().map(|&k| s.val_subscores[p][k]).sum::<f64>();
    let best_parent = sum_of(i).max(sum_of(j));
    if new >= best_parent {
        let jobs: Vec<(RunContext, &Example)> = valset.iter().map(|e| (ctx.clone(), e)).collect();
        let scored = rollouts(cx, &jobs, Tracing::Off, config.failure_score)?;
        s.total_metric_calls += scored.len();
        let idx = s.add(merged, vec![i, j], &scored, config.track_stats);
        s.merges_due = s.merges_due.saturating_sub(1);
        s.merges_tested += 1;
        cx.note(
            "gepa",
            format!(
                "iteration {}: merged {i} and {j} into candidate {idx} ({:.1}% on the valset)",
                s.iteration,
                100.0 * s.aggregate_scores()[idx]
            ),
        );
        append_candidate(log, s, idx)?;
    } else {
        cx.note(
            "gepa",
            format!(
                "iteration {}: merge of {i} and {j} rejected ({new} < {best_parent})",
                s.iteration
            ),
        );
    }
    save(log, s, s.iteration)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subsample_takes_wins_of_each_side_and_ties() {
        let a = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let b = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0];
        let ids = subsample(&a, &b, &mut PyRandom::from_u64(0));
        assert_eq!(ids.len(), 5);
        assert_eq!(ids.iter().filter(|&&k| a[k] > b[k]).count(), 2);
        assert_eq!(ids.iter().filter(|&&k| b[k] > a[k]).count(), 2);
        assert_eq!(ids.iter().filter(|&&k| a[k] == b[k]).count(), 1);
    }

    #[test]
    fn a_triplet_is_desirable_when_one_side_kept_the_ancestor() {
        let c = |x: &str, y: &str| -> Candidate {
            BTreeMap::from([
                ("p".to_string(), x.to_string()),
                ("q".to_string(), y.to_string()),
            ])
        };
        let cands = vec![c("a", "a"), c("b", "a"), c("a", "b"), c("b", "b")];
        assert!(desirable(&cands, 0, 1, 2));
        assert!(!desirable(&cands, 0, 3, 3));
    }
}
