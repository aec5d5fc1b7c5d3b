//! Retrieval benchmark: indexing throughput and peak RSS, query latency, and
//! HotPotQA retrieval quality with and without a title boost.
//!
//! ```sh
//! cargo bench --bench retrieval                        # shipped corpus only
//! cargo bench --bench retrieval -- --synthetic 2000000 # plus a 2M-passage synthetic corpus
//! ```
//!
//! Options: `--synthetic N` (passages of the synthetic corpus, 0 = skip),
//! `--grid` (search-time settings on dev, no timings: `GRID=match:min:avgdl:common:title,...`,
//! with optional `:docs:link:link_min` fields for the second pass over title links,
//! no feedback fields = no second pass; `HELDOUT=1` adds the held-out split;
//! `FEEDBACK=docs:link:link_min` (`FEEDBACK=0`: none) replaces the default
//! second pass for `--latency-only`), `--latency-only ROUNDS` (the default index's latency
//! only), `PATHS_ONLY=1` (stop after the query-path ranking check),
//! `--no-shipped`, `--quality-only` (tokenizer quality on dev and train at
//! two boosts, no timings: usable from a debug build, `cargo test --bench
//! retrieval -- --quality-only`), `--no-serve` (skip `serve`, Python DSPy and OpenSearch
//! bulk-load figures), `--requests N` (per `serve` row, default 4000), `--threads N`, `--memory-mb M`, `--queries N` (synthetic
//! queries), `--data DIR` (default `../shared/data`), `--keep-synthetic FILE`
//! (write the synthetic corpus there and keep it; reuse it if it exists),
//! `SYNTH_INDEX=DIR` (keep the synthetic index there; reuse it if it exists).
//! `RANKINGS=FILE` with `--latency-only` writes every dev question's top 10
//! (ids and score bits, one question a line) there, to check that two builds
//! rank exactly alike (`cmp` the files); `SHIPPED_INDEX=DIR` with
//! `--latency-only` keeps the shipped corpus's index there and reuses it if
//! it exists, so both search the same index (a multi-threaded build orders
//! passages differently from run to run, and with them tied scores).
//! `--latency-only` and the synthetic run also compare the default scoring
//! (term at a time up to a postings limit) with Tantivy's exhaustive union
//! and block-max WAND on the same index.
//!
//! Every build runs in a child process (this binary re-executed with
//! `--child-build`) so the peak RSS it reports (`VmHWM`) is the build's alone.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dspy_rhai::retrieve::{
    build_index, BuildOptions, Feedback, Index, Passage, Scoring, COMMON_WORD_SHARE,
    DEFAULT_TITLE_BOOST, DEFAULT_TOKENIZER, TITLE_LINKS, TITLE_MATCH_BOOST, TOKENIZER, TOKENIZERS,
};

const KS: [usize; 5] = [1, 3, 5, 10, 20];
const BOOSTS: [f32; 6] = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0];

struct Config {
    synthetic: u64,
    shipped: bool,
    threads: usize,
    memory_mb: usize,
    queries: usize,
    data: PathBuf,
    keep_synthetic: Option<PathBuf>,
    serve: bool,
    requests: usize,
    quality_only: bool,
    grid: bool,
    latency_rounds: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child-build") {
        child_build(&args[1..]);
        return;
    }
    let config = parse_args(&args);
    println!(
        "machine: {} cores; load average now: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let scratch = tempfile::tempdir().expect("temp dir");
    if config.shipped {
        shipped(&config, scratch.path());
    }
    if config.synthetic > 0 {
        synthetic(&config, scratch.path());
    }
}

fn parse_args(args: &[String]) -> Config {
    let mut config = Config {
        synthetic: 0,
        shipped: true,
        threads: 0,
        memory_mb: dspy_rhai::retrieve::DEFAULT_MEMORY_MB,
        queries: 2000,
        data: PathBuf::from("../shared/data"),
        keep_synthetic: None,
        serve: true,
        requests: 4000,
        quality_only: false,
        grid: false,
        latency_rounds: 0,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("option needs a value").clone();
        match arg.as_str() {
            "--synthetic" => config.synthetic = value().parse().expect("--synthetic N"),
            "--no-shipped" => config.shipped = false,
            "--no-serve" => config.serve = false,
            "--quality-only" => {
                config.quality_only = true;
                config.serve = false;
            }
            "--latency-only" => {
                config.latency_rounds = value().parse().expect("--latency-only ROUNDS");
                config.serve = false;
            }
            "--grid" => {
                config.grid = true;
                config.quality_only = true;
                config.serve = false;
            }
            "--requests" => config.requests = value().parse().expect("--requests N"),
            "--threads" => config.threads = value().parse().expect("--threads N"),
            "--memory-mb" => config.memory_mb = value().parse().expect("--memory-mb M"),
            "--queries" => config.queries = value().parse().expect("--queries N"),
            "--data" => config.data = PathBuf::from(value()),
            "--keep-synthetic" => config.keep_synthetic = Some(PathBuf::from(value())),
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown option {other}"),
        }
    }
    config
}

fn shipped(config: &Config, scratch: &Path) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/wiki_abstracts.jsonl.gz");
    println!("\n== shipped corpus: {}", corpus.display());
    let dev = config.data.join("hotpotqa_dev.jsonl");
    let questions = read_questions(&dev);
    let train = read_questions(&config.data.join("hotpotqa_train.jsonl"));
    // Every tokenizer, the default one (TOKENIZER) last so its index is the
    // one measured for latency below.
    let mut tokenizers: Vec<&str> = TOKENIZERS.into_iter().filter(|t| *t != TOKENIZER).collect();
    tokenizers.push(TOKENIZER);
    if config.grid || config.latency_rounds > 0 {
        tokenizers.retain(|t| *t == TOKENIZER);
    }
    let mut last = None;
    for tokenizer in tokenizers {
        println!("\n-- tokenizer `{tokenizer}`");
        let out = match std::env::var_os("SHIPPED_INDEX") {
            Some(dir) if config.latency_rounds > 0 => PathBuf::from(dir),
            _ => scratch.join(format!("wiki-{tokenizer}.index")),
        };
        if out.join(dspy_rhai::retrieve::META_FILE).exists() {
            println!("reusing the index in {}", out.display());
        } else {
            run_child_build_with(config, &corpus, &out, tokenizer);
        }
        if questions.is_empty() {
            last = Some(out);
            continue;
        }
        let index = Index::open(&out).expect("open index");
        if config.latency_rounds > 0 {
            // `FEEDBACK=docs:link:min` measures another second
            // pass (`FEEDBACK=0`: none) than the default, `TITLE_LINKS`.
            let feedback = std::env::var("FEEDBACK").map_or(TITLE_LINKS, |spec| {
                feedback_from(&spec.split(':').collect::<Vec<_>>())
            });
            let index = index.with_feedback(feedback);
            println!("feedback: {feedback:?}");
            let queries: Vec<String> = questions.iter().map(|q| q.question.clone()).collect();
            for _ in 0..config.latency_rounds {
                println!("load average: {}", loadavg());
                latency(&index, &queries);
            }
            println!("load average: {}", loadavg());
            if let Ok(path) = std::env::var("RANKINGS") {
                write_rankings(&index, &queries, Path::new(&path));
            }
            scoring_paths(&out, &queries, Scoring::Exhaustive, "exhaustive union");
            return;
        }
        if config.grid {
            if tokenizer == TOKENIZER {
                grid(index, &questions, &train);
            }
            continue;
        }
        let index = if tokenizer == DEFAULT_TOKENIZER && !config.quality_only {
            // The parser path predates title matching: compare with it off.
            let index = index
                .with_tuning(0.0, 1, 1.0, Some(COMMON_WORD_SHARE))
                .with_feedback(Feedback::default());
            query_paths(&index, &questions);
            index
                .with_tuning(TITLE_MATCH_BOOST, 1, 1.0, Some(COMMON_WORD_SHARE))
                .with_feedback(TITLE_LINKS)
        } else {
            index
        };
        let boosts: &[f32] = if config.quality_only {
            &[DEFAULT_TITLE_BOOST, 1.0]
        } else {
            &BOOSTS
        };
        let index = quality(index, "dev", &questions, boosts);
        // A held-out check of the boost chosen on dev.
        if !train.is_empty() {
            quality(index, "train", &train, &[DEFAULT_TITLE_BOOST, 1.0]);
        }
        last = Some(out);
    }
    if config.quality_only {
        return;
    }
    let index = Index::open(&last.expect("an index")).expect("open index");
    if questions.is_empty() {
        println!(
            "{} not found: latency uses passage titles as queries; quality skipped",
            dev.display()
        );
        let titles: Vec<String> = dspy_rhai::retrieve::corpus::CorpusReader::open(&corpus)
            .expect("corpus")
            .take(1000)
            .map(|r| r.expect("record").title)
            .collect();
        latency(&index, &titles);
        return;
    }
    let queries: Vec<String> = questions.iter().map(|q| q.question.clone()).collect();
    println!(
        "\nqueries: {} HotPotQA dev questions, tokenizer `{TOKENIZER}`",
        queries.len()
    );
    latency(&index, &queries);
    if config.serve {
        let index = std::sync::Arc::new(index);
        serve_bench(index, &queries, config.requests);
        python_dspy(&last_dir(scratch), &queries);
        opensearch_bulk(&corpus);
    }
}

fn last_dir(scratch: &Path) -> PathBuf {
    scratch.join(format!("wiki-{TOKENIZER}.index"))
}

/// `serve` throughput and latency at 1, 16 and 64 concurrent clients (each
/// with its own ColBERTv2 client and keep-alive connection), and the client
/// overhead per query against in-process search.
fn serve_bench(index: std::sync::Arc<Index>, queries: &[String], requests: usize) {
    use dspy_rhai::retrieve::serve::Server;
    use dspy_rhai::retrieve::{ColBertV2, RemoteOptions, Retriever};
    let server = Server::start(index.clone(), "127.0.0.1", 0, 0, None).expect("serve");
    let url = server.url();
    println!(
        "\nserve: {url}, {} runtime workers, k=3, {requests} requests per row, no cache",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut in_process: Vec<f64> = queries
        .iter()
        .take(requests)
        .map(|q| {
            let started = Instant::now();
            std::hint::black_box(index.search(q, 3).expect("search"));
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    in_process.sort_by(f64::total_cmp);
    let p = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "in-process search k=3: p50 {:.3} ms, p99 {:.3} ms",
        p(&in_process, 0.5) / 1e3,
        p(&in_process, 0.99) / 1e3
    );
    let mut one_client_p50 = 0.0;
    for clients in [1usize, 16, 64] {
        let per_client = requests.div_ceil(clients);
        let started = Instant::now();
        let mut micros: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let url = &url;
                    s.spawn(move || {
                        let client =
                            ColBertV2::new(url, &RemoteOptions::default()).expect("client");
                        (0..per_client)
                            .map(|i| {
                                let q = &queries[(c * per_client + i) % queries.len()];
                                let t = Instant::now();
                                std::hint::black_box(client.search(q, 3).expect("remote search"));
                                t.elapsed().as_secs_f64() * 1e6
                            })
                            .collect::<Vec<f64>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("client thread"))
                .collect()
        });
        let wall = started.elapsed().as_secs_f64();
        micros.sort_by(f64::total_cmp);
        if clients == 1 {
            one_client_p50 = p(&micros, 0.5);
        }
        println!(
            "serve {clients:>2} client(s): {:.0} queries/s, p50 {:.3} ms, p99 {:.3} ms ({} requests in {:.2} s; load average {})",
            micros.len() as f64 / wall,
            p(&micros, 0.5) / 1e3,
            p(&micros, 0.99) / 1e3,
            micros.len(),
            wall,
            loadavg()
        );
    }
    println!(
        "client overhead per query (1 client, p50 over HTTP - p50 in process): {:.3} ms",
        (one_client_p50 - p(&in_process, 0.5)) / 1e3
    );
    server.shutdown();
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python DSPy's `dspy.ColBERTv2(url=...)` against `serve`: same passages as
/// in-process search, and its time per query. Skipped without Python DSPy
/// (`$DSPY_PYTHON`, else /work/shared-bench-venv/bin/python).
fn python_dspy(index_dir: &Path, queries: &[String]) {
    use dspy_rhai::retrieve::serve::Server;
    let python = std::env::var("DSPY_PYTHON")
        .unwrap_or_else(|_| "/work/shared-bench-venv/bin/python".to_string());
    let index = std::sync::Arc::new(Index::open(index_dir).expect("open index"));
    let server = Server::start(index.clone(), "127.0.0.1", 0, 0, None).expect("serve");
    let n = queries.len().min(500);
    let scratch = tempfile::tempdir().expect("temp dir");
    let qfile = scratch.path().join("queries.json");
    std::fs::write(&qfile, serde_json::to_string(&queries[..n]).expect("json")).expect("write");
    let script = r#"
import json, sys, time
import dspy
rm = dspy.ColBERTv2(url=sys.argv[1])
queries = json.load(open(sys.argv[2]))
t = time.perf_counter()
out = [[r["long_text"] for r in rm(q, k=3)] for q in queries]
print(json.dumps({"seconds": time.perf_counter() - t, "results": out}))
"#;
    let output = Command::new(&python)
        .args(["-c", script, &format!("{}/wiki17_abstracts", server.url())])
        .arg(&qfile)
        .env("DSPY_CACHEDIR", scratch.path().join("dspy_cache"))
        .output();
    let Some(output) = output.ok().filter(|o| o.status.success()) else {
        println!("\nPython DSPy: skipped (no `{python}` with dspy)");
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).expect("python json");
    let same = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(&queries[..n])
        .filter(|(got, q)| {
            let want: Vec<String> = index
                .search(q, 3)
                .expect("search")
                .iter()
                .map(|p| p.dspy_text())
                .collect();
            **got == serde_json::json!(want)
        })
        .count();
    println!(
        "\nPython DSPy 3.x dspy.ColBERTv2 against serve: {same} of {n} queries return exactly the in-process passages; {:.3} ms per query (Python client, cache off by a fresh DSPY_CACHEDIR)",
        v["seconds"].as_f64().unwrap_or(0.0) / n as f64 * 1e3
    );
}

/// Bulk-loading the shipped corpus into the fake OpenSearch: requests and
/// bytes (what the client controls), with the default batch size.
fn opensearch_bulk(corpus: &Path) {
    use dspy_rhai::retrieve::opensearch::BulkOptions;
    use dspy_rhai::retrieve::{OpenSearch, RemoteOptions};
    let fake = dspy_rhai::testing::FakeOpenSearch::start().expect("fake");
    let client = OpenSearch::with_env(&fake.url(), "wiki", &RemoteOptions::default(), &|_| None)
        .expect("client");
    let options = BulkOptions::default();
    let reader = dspy_rhai::retrieve::corpus::CorpusReader::open(corpus).expect("corpus");
    let report = client
        .bulk_load(reader, &options, &|_| {})
        .expect("bulk load");
    let (bulk_requests, bulk_bytes) = fake.bulk_totals();
    println!(
        "\nOpenSearch bulk load into the in-process fake ({} passages per request at most): {} passages, {} requests in all ({} _bulk), {:.1} MB of _bulk bodies ({:.0} bytes per passage), {:.1} s = {:.0} passages/s (the fake indexes in RAM on refresh; load average {})",
        options.batch_docs,
        report.doc_count,
        report.requests,
        bulk_requests,
        bulk_bytes as f64 / 1e6,
        bulk_bytes as f64 / report.doc_count.max(1) as f64,
        report.seconds,
        report.doc_count as f64 / report.seconds.max(1e-9),
        loadavg()
    );
}

/// Issue 15 item 5: the query built from terms (one lookup per term) against
/// the parsed query string it replaced, on the same index, interleaved query
/// by query; and whether both rank every dev question identically.
/// The query path before issue 15 item 5 (a parsed query string) against
/// today's (terms built directly), title matching off.
fn query_paths(index: &Index, questions: &[Question]) {
    let queries: Vec<String> = questions.iter().map(|q| q.question.clone()).collect();
    compare_paths(
        &queries,
        ("parsed query string (before)", &|q, k| {
            index.search_via_query_parser(q, k).expect("search")
        }),
        ("terms, one lookup each (after)", &|q, k| {
            index.search(q, k).expect("search")
        }),
    );
    if std::env::var("PATHS_ONLY").is_ok() {
        std::process::exit(0); // the ranking check alone (usable from a debug build)
    }
}

/// The default scoring (term at a time, block-max WAND for long postings)
/// against `reference` on the same index and query clauses.
fn scoring_paths(dir: &Path, queries: &[String], reference: Scoring, name: &str) {
    // Scoring paths compared on one pass (a second pass follows only term
    // at a time; see `Feedback`).
    let reference = Index::open(dir)
        .expect("open index")
        .with_scoring(reference)
        .with_feedback(Feedback::default());
    let default = Index::open(dir)
        .expect("open index")
        .with_feedback(Feedback::default());
    compare_paths(
        queries,
        (name, &|q, k| reference.search(q, k).expect("search")),
        (
            "default (term at a time up to the postings limit)",
            &|q, k| default.search(q, k).expect("search"),
        ),
    );
}

/// Latency at k=3 of term-at-a-time scoring up to each postings limit (0 =
/// block-max WAND only), interleaved query by query.
fn postings_limit_sweep(dir: &Path, queries: &[String], limits: &[u64]) {
    let indexes: Vec<Index> = limits
        .iter()
        .map(|&max_postings| {
            Index::open(dir)
                .expect("open index")
                .with_scoring(Scoring::TermAtATime { max_postings })
                .with_feedback(Feedback::default())
        })
        .collect();
    let mut times = vec![Vec::new(); limits.len()];
    for q in queries {
        for (index, micros) in indexes.iter().zip(&mut times) {
            let started = Instant::now();
            std::hint::black_box(index.search(q, 3).expect("search"));
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    for (limit, micros) in limits.iter().zip(&mut times) {
        println!(
            "term at a time up to {limit} postings, k=3: {}",
            summary(micros)
        );
    }
}

type SearchFn<'a> = (&'a str, &'a dyn Fn(&str, usize) -> Vec<Passage>);

/// Two search paths on the same queries: how many rankings differ at k=10,
/// then their latency at k=3 and k=10, interleaved query by query.
fn compare_paths(queries: &[String], (name_a, a): SearchFn, (name_b, b): SearchFn) {
    let (mut differ, mut differ_ids, mut max_rel) = (0, 0, 0.0f64);
    for q in queries {
        let (x, y) = (a(q, 10), b(q, 10));
        let key = |p: &[Passage]| {
            p.iter()
                .map(|p| (p.id.clone(), p.score.to_bits()))
                .collect::<Vec<_>>()
        };
        if key(&x) != key(&y) {
            differ += 1;
        }
        let ids = |p: &[Passage]| p.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        if ids(&x) != ids(&y) {
            differ_ids += 1;
        }
        for (x, y) in x.iter().zip(&y) {
            max_rel = max_rel.max(f64::from(
                (x.score - y.score).abs() / y.score.abs().max(1e-30),
            ));
        }
    }
    println!(
        "{name_a} vs {name_b}: {differ} of {} queries differ in ids or score bits at k=10; {differ_ids} in ids; largest relative score difference {max_rel:.1e}",
        queries.len()
    );
    if std::env::var("PATHS_ONLY").is_ok() {
        return;
    }
    for q in queries {
        a(q, 3);
        b(q, 3);
    }
    for k in [3, 10] {
        let (mut times_a, mut times_b) = (Vec::new(), Vec::new());
        for q in queries {
            let started = Instant::now();
            std::hint::black_box(a(q, k));
            times_a.push(started.elapsed().as_secs_f64() * 1e6);
            let started = Instant::now();
            std::hint::black_box(b(q, k));
            times_b.push(started.elapsed().as_secs_f64() * 1e6);
        }
        for (name, micros) in [(name_a, &mut times_a), (name_b, &mut times_b)] {
            println!("query path k={k:<2} {name}: {}", summary(micros));
        }
    }
}

fn synthetic(config: &Config, scratch: &Path) {
    // --keep-synthetic FILE writes the corpus there and keeps it, and
    // reuses it if it exists.
    let corpus = config
        .keep_synthetic
        .clone()
        .unwrap_or_else(|| scratch.join("synthetic.jsonl"));
    println!(
        "\n== synthetic corpus: {} passages of ~100 words",
        config.synthetic
    );
    let mut gen = Zipf::new(100_000, 1.0, 0x5eed_cafe);
    let started = Instant::now();
    let reuse = config.keep_synthetic.is_some() && corpus.exists();
    // Generated either way, so the queries drawn next are the same.
    let target = if reuse {
        Path::new("/dev/null")
    } else {
        corpus.as_path()
    };
    let bytes = write_synthetic(target, config.synthetic, &mut gen);
    println!(
        "{} {:.2} GB in {:.1} s",
        if reuse {
            format!("reusing {}; generated (not written)", corpus.display())
        } else {
            "generated".to_string()
        },
        bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    // SYNTH_INDEX=DIR keeps the built index there, and reuses it if it exists.
    let out = std::env::var_os("SYNTH_INDEX")
        .map_or_else(|| scratch.join("synthetic.index"), PathBuf::from);
    if out.join(dspy_rhai::retrieve::META_FILE).exists() {
        println!("reusing the index in {}", out.display());
    } else {
        run_child_build(config, &corpus, &out);
    }
    if config.keep_synthetic.is_none() {
        std::fs::remove_file(&corpus).expect("remove synthetic corpus");
    }
    let index = Index::open(&out).expect("open index");
    let zipf_queries: Vec<String> = (0..config.queries)
        .map(|_| {
            (0..4)
                .map(|_| {
                    let rank = gen.sample();
                    gen.word(rank).to_string()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    println!("queries: {} random 4-word queries, words drawn from the corpus's Zipf law (mostly very common words)", zipf_queries.len());
    latency(&index, &zipf_queries);
    let vocab = gen.words.len() as u64;
    let uniform_queries: Vec<String> = (0..config.queries)
        .map(|_| {
            (0..4)
                .map(|_| {
                    let rank = (gen.next_u64() % vocab) as usize;
                    gen.word(rank).to_string()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    println!("queries: {} random 4-word queries, words drawn uniformly from the vocabulary (mostly rare words)", uniform_queries.len());
    latency(&index, &uniform_queries);
    for (name, queries) in [("Zipf", &zipf_queries), ("uniform", &uniform_queries)] {
        let queries = &queries[..queries.len().min(500)];
        println!("{name} queries, load average {}:", loadavg());
        scoring_paths(&out, queries, Scoring::Exhaustive, "exhaustive union");
        scoring_paths(
            &out,
            queries,
            Scoring::TermAtATime { max_postings: 0 },
            "block-max WAND",
        );
        postings_limit_sweep(
            &out,
            queries,
            &[0, 25_000, 50_000, 100_000, 200_000, 400_000],
        );
    }
    if config.serve {
        let mixed: Vec<String> = zipf_queries
            .into_iter()
            .zip(uniform_queries)
            .flat_map(|(a, b)| [a, b])
            .collect();
        println!("serve on the synthetic index, queries alternating Zipf and uniform:");
        serve_bench(std::sync::Arc::new(index), &mixed, config.requests);
    }
}

/// Builds the index in a child process and prints its report and peak RSS.
fn run_child_build(config: &Config, corpus: &Path, out: &Path) {
    run_child_build_with(config, corpus, out, TOKENIZER)
}

fn run_child_build_with(config: &Config, corpus: &Path, out: &Path, tokenizer: &str) {
    let output = Command::new(std::env::current_exe().expect("current exe"))
        .arg("--child-build")
        .arg(corpus)
        .arg(out)
        .arg(config.threads.to_string())
        .arg(config.memory_mb.to_string())
        .arg(tokenizer)
        .output()
        .expect("spawn child build");
    assert!(
        output.status.success(),
        "child build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

fn child_build(args: &[String]) {
    let [corpus, out, threads, memory_mb, tokenizer] = args else {
        panic!("--child-build CORPUS OUT THREADS MEMORY_MB TOKENIZER");
    };
    let options = BuildOptions {
        threads: threads.parse().expect("threads"),
        memory_budget_bytes: memory_mb.parse::<usize>().expect("memory") * 1024 * 1024,
        tokenizer: TOKENIZERS
            .into_iter()
            .find(|t| t == tokenizer)
            .expect("known tokenizer"),
        ..BuildOptions::default()
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let (mut anon, mut file) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                anon = anon.max(status_kb("RssAnon:"));
                file = file.max(status_kb("RssFile:"));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (anon, file)
        })
    };
    let report =
        build_index(Path::new(corpus), Path::new(out), &options, &|_| {}).expect("build index");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (anon_kb, file_kb) = sampler.join().expect("sampler");
    let segments = std::fs::read_dir(out)
        .expect("index dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "idx"))
        })
        .count();
    println!(
        "build: {} docs in {:.1} s = {:.0} docs/s; threads {}, writer budget {} MB; \
         index {:.1} MB in {} segment(s); peak RSS of the build process (VmHWM) {:.0} MB \
         (sampled every 20 ms: anonymous {:.0} MB, file-backed mmap {:.0} MB); \
         CPU time {:.1} s = {:.0} docs per CPU-second",
        report.doc_count,
        report.seconds,
        report.docs_per_sec(),
        if threads == "0" {
            "auto".to_string()
        } else {
            threads.clone()
        },
        memory_mb,
        report.index_bytes as f64 / 1e6,
        segments,
        status_kb("VmHWM:") as f64 / 1024.0,
        anon_kb as f64 / 1024.0,
        file_kb as f64 / 1024.0,
        cpu_seconds(),
        report.doc_count as f64 / cpu_seconds().max(1e-9)
    );
}

/// User + system CPU time of this process so far, from /proc/self/stat
/// (assumes the usual 100 clock ticks per second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A `kB` value of /proc/self/status, such as `VmHWM:` (peak RSS).
fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Each query's top 10 as `id:score-bits` words, one query a line.
fn write_rankings(index: &Index, queries: &[String], path: &Path) {
    let mut out = BufWriter::new(File::create(path).expect("create the rankings file"));
    for query in queries {
        let hits = index.search(query, 10).expect("search");
        let line: Vec<String> = hits
            .iter()
            .map(|p| format!("{}:{:08x}", p.id, p.score.to_bits()))
            .collect();
        writeln!(out, "{}", line.join(" ")).expect("write the rankings");
    }
    out.flush().expect("write the rankings");
    println!(
        "rankings of {} queries written to {}",
        queries.len(),
        path.display()
    );
}

fn latency(index: &Index, queries: &[String]) {
    for query in queries {
        index.search(query, 10).expect("warm-up search");
    }
    for k in [3, 10] {
        let mut micros: Vec<f64> = queries
            .iter()
            .map(|query| {
                let started = Instant::now();
                std::hint::black_box(index.search(query, k).expect("search"));
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        println!(
            "latency k={k:<2}: {} ({} queries, 1 thread, incl. fetching stored passages)",
            summary(&mut micros),
            micros.len()
        );
    }
}

/// "p50 X ms, p99 Y ms, mean Z ms" of latencies in microseconds (sorts them).
fn summary(micros: &mut [f64]) -> String {
    micros.sort_by(f64::total_cmp);
    let pct = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms",
        pct(0.5) / 1e3,
        pct(0.99) / 1e3,
        micros.iter().sum::<f64>() / micros.len() as f64 / 1e3
    )
}

struct Question {
    question: String,
    gold_titles: Vec<String>,
}

fn read_questions(path: &Path) -> Vec<Question> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("question JSON");
            Question {
                question: v["question"].as_str().expect("question").to_string(),
                gold_titles: v["gold_titles"]
                    .as_array()
                    .expect("gold_titles")
                    .iter()
                    .map(|t| t.as_str().expect("title").to_string())
                    .collect(),
            }
        })
        .collect()
}

fn quality(mut index: Index, split: &str, questions: &[Question], boosts: &[f32]) -> Index {
    println!(
        "\nHotPotQA {split} retrieval, question as query ({} questions):",
        questions.len()
    );
    println!("| title boost | k | hit@k | recall@k | both-gold@k |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    let max_k = *KS.last().expect("ks");
    for &boost in boosts {
        index = index.with_title_boost(boost);
        let mut found_at: Vec<Vec<usize>> = Vec::with_capacity(questions.len());
        for q in questions {
            let titles: Vec<String> = index
                .search(&q.question, max_k)
                .expect("search")
                .into_iter()
                .map(|p| p.title)
                .collect();
            found_at.push(
                q.gold_titles
                    .iter()
                    .map(|g| titles.iter().position(|t| t == g).unwrap_or(usize::MAX))
                    .collect(),
            );
        }
        for k in KS {
            let n = questions.len() as f64;
            let (mut hit, mut recall, mut both) = (0.0, 0.0, 0.0);
            for ranks in &found_at {
                let got = ranks.iter().filter(|&&r| r < k).count();
                hit += f64::from(u8::from(got > 0));
                recall += got as f64 / ranks.len() as f64;
                both += f64::from(u8::from(got == ranks.len()));
            }
            println!(
                "| {boost} | {k} | {:.3} | {:.3} | {:.3} |",
                hit / n,
                recall / n,
                both / n
            );
        }
    }
    index
}

/// Search-time settings on dev (`--grid`): title-match weight, shortest
/// n-gram, average-length factor; recall@10 and both-gold@10 (and @5, @20).
fn grid(mut index: Index, dev: &[Question], train: &[Question]) {
    let spec = std::env::var("GRID").unwrap_or_else(|_| "0:1:1,1:1:1".to_string());
    for cell in spec.split(',') {
        let v: Vec<&str> = cell.split(':').collect();
        let (boost, min, scale) = (
            v[0].parse::<f32>().expect("boost"),
            v[1].parse::<usize>().expect("min words"),
            v[2].parse::<f64>().expect("avgdl scale"),
        );
        let share = v
            .get(3)
            .map_or(COMMON_WORD_SHARE, |s| s.parse().expect("common share"));
        let title_boost = v
            .get(4)
            .map_or(DEFAULT_TITLE_BOOST, |s| s.parse().expect("title boost"));
        let feedback = feedback_from(&v[v.len().min(5)..]);
        index = index
            .with_tuning(boost, min, scale, Some(share))
            .with_title_boost(title_boost)
            .with_feedback(feedback);
        let splits: &[(&str, &[Question])] = if std::env::var("HELDOUT").is_ok() {
            &[("dev", dev), ("held-out", train)]
        } else {
            &[("dev", dev)]
        };
        for (name, questions) in splits {
            let mut sums = [[0.0f64; 3]; 3];
            for q in questions.iter() {
                let titles: Vec<String> = index
                    .search(&q.question, 20)
                    .expect("search")
                    .into_iter()
                    .map(|p| p.title)
                    .collect();
                for (i, k) in [5usize, 10, 20].into_iter().enumerate() {
                    let got = q
                        .gold_titles
                        .iter()
                        .filter(|g| titles.iter().take(k).any(|t| t == *g))
                        .count();
                    sums[i][0] += f64::from(u8::from(got > 0));
                    sums[i][1] += got as f64 / q.gold_titles.len() as f64;
                    sums[i][2] += f64::from(u8::from(got == q.gold_titles.len()));
                }
            }
            let n = questions.len() as f64;
            println!(
                "grid {name} match {boost} min {min} avgdl x{scale} common {share} title^{title_boost} {feedback:?}: r@5 {:.3} b@5 {:.3} | r@10 {:.3} b@10 {:.3} | r@20 {:.3} b@20 {:.3}",
                sums[0][1] / n, sums[0][2] / n, sums[1][1] / n, sums[1][2] / n, sums[2][1] / n, sums[2][2] / n
            );
        }
    }
}

/// A [`Feedback`] from `docs:link_weight:link_min_words` (missing fields:
/// 0; all missing: no second pass).
fn feedback_from(v: &[&str]) -> Feedback {
    let num = |i: usize| {
        v.get(i)
            .map_or(0.0, |s| s.parse::<f64>().expect("feedback number"))
    };
    Feedback {
        docs: num(0) as usize,
        link_weight: num(1) as f32,
        link_min_words: num(2) as usize,
    }
}

/// A seeded Zipf sampler over a generated vocabulary (splitmix64 + inverse CDF).
struct Zipf {
    state: u64,
    cdf: Vec<f64>,
    words: Vec<String>,
}

impl Zipf {
    fn new(vocab: usize, s: f64, seed: u64) -> Zipf {
        let mut cdf = Vec::with_capacity(vocab);
        let mut total = 0.0;
        for rank in 1..=vocab {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        cdf.iter_mut().for_each(|c| *c /= total);
        let mut zipf = Zipf {
            state: seed,
            cdf,
            words: Vec::with_capacity(vocab),
        };
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "da", "ve", "zu", "ho", "ba", "ce",
            "fi", "go", "ju", "le", "ma", "no", "pe", "ra", "si", "tu",
        ];
        let mut seen = std::collections::HashSet::new();
        while zipf.words.len() < vocab {
            let len = 1 + (zipf.next_u64() % 4) as usize;
            let word: String = (0..len)
                .map(|_| SYLLABLES[(zipf.next_u64() % 24) as usize])
                .collect();
            if seen.insert(word.clone()) {
                zipf.words.push(word);
            }
        }
        zipf
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn sample(&mut self) -> usize {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    fn word(&self, rank: usize) -> &str {
        &self.words[rank]
    }
}

/// Streams `n` synthetic passages (2–4 word title, 80–120 word text) to `path`.
fn write_synthetic(path: &Path, n: u64, gen: &mut Zipf) -> u64 {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).expect("create corpus"));
    let mut line = String::with_capacity(1024);
    let mut bytes = 0;
    for i in 0..n {
        line.clear();
        line.push_str(&format!("{{\"id\":\"s{i}\",\"title\":\""));
        let title_words = 2 + gen.next_u64() % 3;
        for w in 0..title_words {
            if w > 0 {
                line.push(' ');
            }
            let rank = gen.sample();
            line.push_str(gen.word(rank));
        }
        line.push_str("\",\"text\":\"");
        let text_words = 80 + gen.next_u64() % 41;
        for w in 0..text_words {
            if w > 0 {
                line.push(' ');
            }
            let rank = gen.sample();
            line.push_str(gen.word(rank));
        }
        line.push_str("\"}\n");
        out.write_all(line.as_bytes()).expect("write corpus");
        bytes += line.len() as u64;
    }
    out.flush().expect("flush corpus");
    bytes
}
