//! GEPA's Pareto front over validation instances (the `gepa` package:
//! `core/state.py` `_update_pareto_front_for_val_id`, `gepa_utils.py`
//! `remove_dominated_programs` and `select_program_candidate_from_pareto_front`).
//!
//! For every validation instance the front keeps the best score seen and
//! the set of candidates reaching it. A candidate is *dominated* when every
//! instance it is best on also has another (undominated) candidate; parents
//! are drawn from the undominated ones, weighted by how many instances they
//! are best on.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::data::PyRandom;

/// Best score and the candidates reaching it, per validation instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParetoFront {
    /// Best score per instance (`-inf` until a candidate is scored on it).
    pub best: Vec<f64>,
    /// Candidate indices reaching `best`, per instance.
    pub programs: Vec<BTreeSet<usize>>,
}

impl ParetoFront {
    /// An empty front over `instances` validation instances.
    pub fn new(instances: usize) -> ParetoFront {
        ParetoFront {
            best: vec![f64::NEG_INFINITY; instances],
            programs: vec![BTreeSet::new(); instances],
        }
    }

    /// Adds candidate `program` with its per-instance `scores` (one per instance).
    pub fn add(&mut self, program: usize, scores: &[f64]) {
        for (i, &score) in scores.iter().enumerate() {
            if score > self.best[i] {
                self.best[i] = score;
                self.programs[i] = BTreeSet::from([program]);
            } else if score == self.best[i] {
                self.programs[i].insert(program);
            }
        }
    }

    /// The fronts with dominated candidates removed (`remove_dominated_programs`):
    /// candidates are tried from the lowest aggregate `scores` up, and one is
    /// removed when every front holding it also holds another remaining one.
    pub fn undominated(&self, scores: &[f64]) -> Vec<BTreeSet<usize>> {
        // Programs in order of first appearance (Python's dict insertion order).
        let mut programs: Vec<usize> = Vec::new();
        for front in &self.programs {
            for &p in front {
                if !programs.contains(&p) {
                    programs.push(p);
                }
            }
        }
        // Python's `sorted(..., key=score)` is stable.
        programs.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
        let mut dominated: BTreeSet<usize> = BTreeSet::new();
        loop {
            let mut removed = false;
            for &y in &programs {
                if dominated.contains(&y) {
                    continue;
                }
                let others = |p: usize| p != y && !dominated.contains(&p) && programs.contains(&p);
                let is_dominated = self
                    .programs
                    .iter()
                    .filter(|front| front.contains(&y))
                    .all(|front| front.iter().any(|&p| others(p)));
                if is_dominated {
                    dominated.insert(y);
                    removed = true;
                    break;
                }
            }
            if !removed {
                break;
            }
        }
        self.programs
            .iter()
            .map(|front| front.difference(&dominated).copied().collect())
            .collect()
    }

    /// The distinct undominated candidates (`find_dominator_programs`), in
    /// ascending order.
    pub fn dominators(&self, scores: &[f64]) -> Vec<usize> {
        let set: BTreeSet<usize> = self.undominated(scores).into_iter().flatten().collect();
        set.into_iter().collect()
    }

    /// Draws a parent (`select_program_candidate_from_pareto_front`): each
    /// undominated candidate as often as the instances it is best on.
    /// `None` before any candidate was added.
    pub fn select(&self, scores: &[f64], rng: &mut PyRandom) -> Option<usize> {
        let mut order: Vec<usize> = Vec::new();
        let mut freq: Vec<usize> = Vec::new();
        for front in self.undominated(scores) {
            for p in front {
                match order.iter().position(|&q| q == p) {
                    Some(i) => freq[i] += 1,
                    None => {
                        order.push(p);
                        freq.push(1);
                    }
                }
            }
        }
        let sampling: Vec<usize> = order
            .iter()
            .zip(&freq)
            .flat_map(|(&p, &n)| std::iter::repeat_n(p, n))
            .collect();
        rng.choice(&sampling).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates 0..3 on four instances:
    /// ```text
    ///        i0   i1   i2   i3   mean
    /// c0    0.0  0.0  1.0  0.0   0.25
    /// c1    1.0  0.0  1.0  0.0   0.50   (dominates c0)
    /// c2    0.0  1.0  0.0  0.0   0.25
    /// c3    1.0  1.0  0.0  0.0   0.50   (dominates c2, not c1: i2)
    /// ```
    fn table() -> (ParetoFront, Vec<f64>) {
        let rows = [
            [0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0, 0.0],
        ];
        let mut front = ParetoFront::new(4);
        for (p, row) in rows.iter().enumerate() {
            front.add(p, row);
        }
        let means = rows.iter().map(|r| r.iter().sum::<f64>() / 4.0).collect();
        (front, means)
    }

    #[test]
    fn the_front_keeps_the_best_score_and_every_candidate_reaching_it() {
        let (front, _) = table();
        assert_eq!(front.best, vec![1.0, 1.0, 1.0, 0.0]);
        let sets: Vec<Vec<usize>> = front
            .programs
            .iter()
            .map(|s| s.iter().copied().collect())
            .collect();
        assert_eq!(
            sets,
            vec![vec![1, 3], vec![2, 3], vec![0, 1], vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn dominated_candidates_are_removed() {
        let (front, means) = table();
        assert_eq!(front.dominators(&means), vec![1, 3]);
        let undominated = front.undominated(&means);
        let sets: Vec<Vec<usize>> = undominated
            .iter()
            .map(|s| s.iter().copied().collect())
            .collect();
        assert_eq!(sets, vec![vec![1, 3], vec![3], vec![1], vec![1, 3]]);
    }

    #[test]
    fn selection_is_weighted_by_instances_won_and_seeded() {
        let (front, means) = table();
        let mut counts = [0usize; 4];
        let mut rng = PyRandom::from_u64(0);
        for _ in 0..600 {
            counts[front.select(&means, &mut rng).unwrap()] += 1;
        }
        // c1 and c3 each appear three times in the sampling list.
        assert_eq!(counts[0] + counts[2], 0);
        assert!(counts[1] > 200 && counts[3] > 200, "{counts:?}");
        let again: Vec<usize> = {
            let mut rng = PyRandom::from_u64(0);
            (0..5)
                .map(|_| front.select(&means, &mut rng).unwrap())
                .collect()
        };
        let mut rng = PyRandom::from_u64(0);
        let first: Vec<usize> = (0..5)
            .map(|_| front.select(&means, &mut rng).unwrap())
            .collect();
        assert_eq!(again, first);
        assert_eq!(ParetoFront::new(2).select(&[], &mut rng), None);
    }
}
