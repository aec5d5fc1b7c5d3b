//! Retrieval: corpus formats, index build (bad lines, cancellation, atomic
//! swap), search robustness and ranking, and the `index`/`search` CLI.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dspy_rhai::retrieve::{
    build_index, build_index_in_stages, corpus::CorpusReader, default_index_dir, index_dir_from,
    BuildOptions, BuildReport, BuildStage, Index, Passage, RetrieveError, META_FILE,
};

/// Five passages, with the titles the ranking tests look for.
pub(crate) const PASSAGES: [(&str, &str, &str); 5] = [
    (
        "p1",
        "The Wailing (film)",
        "The Wailing is a 2016 South Korean horror film directed by Na Hong-jin.",
    ),
    (
        "p2",
        "Na Hong-jin",
        "Na Hong-jin is a South Korean film director and screenwriter.",
    ),
    (
        "p3",
        "Kinsey Millhone",
        "Kinsey Millhone is a fictional private investigator in Santa Teresa, California.",
    ),
    (
        "p4",
        "Santa Teresa",
        "Santa Teresa is a fictional city modelled on Santa Barbara.",
    ),
    (
        "p5",
        "Gabilan Mountains",
        "The Gabilan Mountains are a mountain range east of the Salinas Valley.",
    ),
];

pub(crate) fn jsonl_fixture() -> String {
    PASSAGES
        .iter()
        .map(|(id, title, text)| {
            serde_json::json!({ "id": id, "title": title, "text": text }).to_string() + "\n"
        })
        .collect()
}

pub(crate) fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn write_gz(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(contents.as_bytes()).unwrap();
    gz.finish().unwrap();
    path
}

fn build(corpus: &Path, out: &Path) -> Result<BuildReport, RetrieveError> {
    build_index(corpus, out, &small_options(), &|_| {})
}

fn small_options() -> BuildOptions {
    BuildOptions {
        threads: 1,
        memory_budget_bytes: 20_000_000,
        ..BuildOptions::default()
    }
}

/// The names in `dir`, sorted, to check that a build left no debris.
/// The names in `dir`, sorted, without the builds' lock files (`.NAME.lock`
/// stays beside an index on purpose: it holds the OS lock of the next build).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !(name.starts_with('.') && name.ends_with(".lock")))
        .collect();
    names.sort();
    names
}

pub(crate) fn titles(passages: &[Passage]) -> Vec<&str> {
    passages.iter().map(|p| p.title.as_str()).collect()
}

#[test]
fn builds_and_searches_every_corpus_format() {
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = jsonl_fixture();
    let colbert: String = PASSAGES
        .iter()
        .map(|(_, title, text)| {
            serde_json::json!({ "text": format!("{title} | {text}") }).to_string() + "\n"
        })
        .collect();
    let tsv: String = std::iter::once("id\ttext\ttitle\n".to_string())
        .chain(
            PASSAGES
                .iter()
                .map(|(id, title, text)| format!("{id}\t\"{text}\"\t{title}\n")),
        )
        .collect();
    let corpora = [
        write(tmp.path(), "c.jsonl", &jsonl),
        write(tmp.path(), "c.json", &colbert),
        write(tmp.path(), "c.tsv", &tsv),
        write_gz(tmp.path(), "c.jsonl.gz", &jsonl),
        write_gz(tmp.path(), "c.tsv.gz", &tsv),
    ];
    for corpus in &corpora {
        let out = tmp.path().join("out.index");
        let report = build(corpus, &out).unwrap();
        assert_eq!(report.doc_count, 5, "{}", corpus.display());
        assert_eq!(report.bad_lines_skipped, 0);
        assert!(report.index_bytes > 0);
        let index = Index::open(&out).unwrap();
        assert_eq!(index.num_docs(), 5);
        let hits = index.search("Gabilan Mountains", 2).unwrap();
        assert_eq!(hits[0].title, "Gabilan Mountains", "{}", corpus.display());
        assert_eq!(
            hits[0].text,
            "The Gabilan Mountains are a mountain range east of the Salinas Valley."
        );
        let expected_id = if corpus.ends_with("c.json") {
            "5"
        } else {
            "p5"
        };
        assert_eq!(hits[0].id, expected_id, "{}", corpus.display());
    }
}

#[test]
fn corpus_reader_handles_ids_titles_and_blank_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write(
        tmp.path(),
        "c.jsonl",
        "{\"id\": 7, \"text\": \"A | b | c\"}\n\n{\"text\": \"no title\"}\r\n",
    );
    let records: Vec<_> = CorpusReader::open(&corpus)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].id.as_str(), records[0].title.as_str()),
        ("7", "A")
    );
    assert_eq!(records[0].text, "b | c");
    assert_eq!(
        (records[1].id.as_str(), records[1].title.as_str()),
        ("3", "")
    );
    assert_eq!(records[1].text, "no title");

    let tsv = write(tmp.path(), "c.tsv", "1\t\"say \"\"hi\"\"\"\n2\tplain\tT\n");
    let records: Vec<_> = CorpusReader::open(&tsv)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records[0].text, "say \"hi\"");
    assert_eq!(records[0].title, "");
    assert_eq!(records[1].title, "T");

    let err = CorpusReader::open(&write(tmp.path(), "c.txt", "x")).unwrap_err();
    assert!(err.to_string().contains("unknown corpus format"), "{err}");
    let array = write(tmp.path(), "a.json", "[{\"text\": \"x\"}]\n");
    let err = CorpusReader::open(&array)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("JSON Lines"), "{err}");
}

#[test]
fn bad_line_stops_the_build_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut corpus = jsonl_fixture();
    corpus.insert_str(corpus.find('\n').unwrap() + 1, "{\"title\": \"no text\"}\n");
    let path = write(tmp.path(), "bad.jsonl", &corpus);
    let out = tmp.path().join("out.index");
    let err = build(&path, &out).unwrap_err();
    assert!(
        matches!(err, RetrieveError::BadLine { line: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad.jsonl:2:"), "{err}");
    assert!(!out.exists());
    assert_eq!(entries(tmp.path()), ["bad.jsonl"]);

    let tsv = write(
        tmp.path(),
        "bad.tsv",
        "1\ttext\ttitle\n2\tonly-one-column-missing\t\t\n",
    );
    let err = build(&tsv, &out).unwrap_err();
    assert!(err.to_string().contains("bad.tsv:2:"), "{err}");
}

#[test]
fn skip_bad_lines_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = format!("not json\n{}{{\"id\": \"x\"}}\n\u{0}\n", jsonl_fixture());
    let path = write(tmp.path(), "bad.jsonl", &corpus);
    let out = tmp.path().join("out.index");
    let options = BuildOptions {
        skip_bad_lines: true,
        ..small_options()
    };
    let report = build_index(&path, &out, &options, &|_| {}).unwrap();
    assert_eq!(report.doc_count, 5);
    assert_eq!(report.bad_lines_skipped, 3);
    let index = Index::open(&out).unwrap();
    assert_eq!(index.meta().bad_lines_skipped, 3);
    assert_eq!(index.meta().doc_count, 5);
    assert_eq!(index.meta().source, path.canonicalize().unwrap());
    assert_eq!(
        index.meta().schema_version,
        dspy_rhai::retrieve::SCHEMA_VERSION
    );
}

/// A corpus of `n` passages titled `Passage <i>` whose line `bad_line` (if any) is malformed.
pub(crate) fn numbered_corpus(n: usize, bad_line: Option<usize>) -> String {
    (1..=n)
        .map(|i| {
            if Some(i) == bad_line {
                "{oops\n".to_string()
            } else {
                format!("{{\"id\": \"n{i}\", \"title\": \"Passage {i}\", \"text\": \"word{i} filler text\"}}\n")
            }
        })
        .collect()
}

#[test]
fn failed_or_cancelled_rebuild_keeps_the_old_index_and_leaves_no_debris() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("wiki.index");
    let good = write(tmp.path(), "good.jsonl", &jsonl_fixture());
    build(&good, &out).unwrap();
    let before = entries(tmp.path());

    // Line 500 is malformed.
    let bad = write(tmp.path(), "bad.jsonl", &numbered_corpus(1000, Some(500)));
    let err = build(&bad, &out).unwrap_err();
    assert!(err.to_string().contains("bad.jsonl:500:"), "{err}");

    // Cancelled mid-stream, from the progress callback.
    let big = write(tmp.path(), "big.jsonl", &numbered_corpus(5000, None));
    let options = small_options();
    let cancel = Arc::clone(&options.cancel);
    let err = build_index(&big, &out, &options, &|n| {
        if n >= 1024 {
            cancel.store(true, Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(matches!(err, RetrieveError::Cancelled), "{err:?}");
    assert!(err.to_string().contains("unchanged"), "{err}");

    let mut expected = before.clone();
    expected.extend(["bad.jsonl".to_string(), "big.jsonl".to_string()]);
    expected.sort();
    assert_eq!(entries(tmp.path()), expected);
    let index = Index::open(&out).unwrap();
    assert_eq!(index.num_docs(), 5);
    assert_eq!(
        index.search("Kinsey Millhone", 1).unwrap()[0].title,
        "Kinsey Millhone"
    );

    // A successful rebuild replaces the index.
    let options = BuildOptions {
        cancel: Arc::new(AtomicBool::new(false)),
        ..small_options()
    };
    build_index(&big, &out, &options, &|_| {}).unwrap();
    let index = Index::open(&out).unwrap();
    assert_eq!(index.num_docs(), 5000);
    assert_eq!(index.search("word4321", 1).unwrap()[0].id, "n4321");
}

#[test]
fn a_build_reports_progress_for_both_reads_of_the_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write(tmp.path(), "big.jsonl", &numbered_corpus(3000, None));
    let seen = std::sync::Mutex::new(Vec::new());
    let report = build_index_in_stages(
        &corpus,
        &tmp.path().join("idx"),
        &small_options(),
        &|stage, n| {
            seen.lock().unwrap().push((stage, n));
        },
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    // The titles first, counting up, then the passages up to every one.
    let split = seen
        .iter()
        .position(|(s, _)| *s == BuildStage::Passages)
        .unwrap();
    assert!(split >= 2, "{seen:?}");
    assert!(seen[..split].iter().all(|(s, _)| *s == BuildStage::Titles));
    assert!(seen[split..]
        .iter()
        .all(|(s, _)| *s == BuildStage::Passages));
    assert!(
        seen[..split].windows(2).all(|w| w[0].1 < w[1].1),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&(BuildStage::Passages, report.doc_count)));
    assert_eq!(report.doc_count, 3000);
}

#[test]
fn ctrl_c_while_titles_are_read_keeps_the_old_index_and_leaves_no_debris() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("idx");
    build(&write(tmp.path(), "good.jsonl", &jsonl_fixture()), &out).unwrap();
    let big = write(tmp.path(), "big.jsonl", &numbered_corpus(5000, None));
    let before = entries(tmp.path());
    let options = small_options();
    let cancel = Arc::clone(&options.cancel);
    let passages = std::sync::atomic::AtomicU64::new(0);
    let err = build_index_in_stages(&big, &out, &options, &|stage, n| match stage {
        BuildStage::Titles if n >= 1024 => cancel.store(true, Ordering::Relaxed),
        BuildStage::Titles => {}
        BuildStage::Passages => {
            passages.fetch_add(1, Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(matches!(err, RetrieveError::Cancelled), "{err:?}");
    // Stopped in the first read: no passage was indexed.
    assert_eq!(passages.load(Ordering::Relaxed), 0);
    assert_eq!(entries(tmp.path()), before);
    assert_eq!(Index::open(&out).unwrap().num_docs(), 5);
}

#[test]
fn next_build_removes_debris_of_a_killed_build() {
    let tmp = tempfile::tempdir().unwrap();
    let debris = tmp.path().join(".wiki.index.building-4242");
    std::fs::create_dir(&debris).unwrap();
    std::fs::write(debris.join("segment"), "half written").unwrap();
    let good = write(tmp.path(), "good.jsonl", &jsonl_fixture());
    build(&good, &tmp.path().join("wiki.index")).unwrap();
    assert_eq!(entries(tmp.path()), ["good.jsonl", "wiki.index"]);
}

#[test]
fn refuses_to_replace_a_directory_that_is_not_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("precious");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    let good = write(tmp.path(), "good.jsonl", &jsonl_fixture());
    let err = build(&good, &out).unwrap_err();
    assert!(matches!(err, RetrieveError::NotAnIndex { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me"
    );
}

pub(crate) fn fixture_index(tmp: &Path) -> Index {
    let out = tmp.join("fixture.index");
    build(&write(tmp, "c.jsonl", &jsonl_fixture()), &out).unwrap();
    Index::open(&out).unwrap()
}

#[test]
fn nasty_queries_never_error() {
    let tmp = tempfile::tempdir().unwrap();
    let index = fixture_index(tmp.path());
    let long = "Santa Teresa (California) \"private eye\" AND ".repeat(250);
    assert!(long.len() >= 10_000);
    let one_long_word = "x".repeat(10_000);
    let queries = [
        "\"The Wailing\"",
        "\"unbalanced quote",
        "title:Kinsey",
        "nosuchfield:value",
        "Note: the film",
        "(Santa Teresa",
        "Santa) Teresa]",
        "[1 TO 5}",
        "{ } [ ] ( )",
        "Santa AND Teresa",
        "Santa OR NOT Teresa",
        "NOT",
        "AND OR",
        "-Santa +Teresa",
        "Teresa*",
        "*",
        "Santa^3 Teresa^",
        "Teresa~2",
        "~ ^ * : \\ / ! ?",
        "IN [a b]",
        "Woo-hee's film",
        "",
        "   \t\n ",
        "韓國 恐怖電影",
        "فيلم رعب كوري",
        "🎬🍿 horror 😱",
        "ÀÉÎÕÜ ß ﬁlm",
        &long,
        &one_long_word,
    ];
    for query in queries {
        let result = index.search(query, 3);
        assert!(result.is_ok(), "{query:?}: {result:?}");
    }
    assert!(index.search("", 3).unwrap().is_empty());
    assert!(index.search("  \t ", 3).unwrap().is_empty());
    assert!(index.search("~^*:()", 3).unwrap().is_empty());
    assert!(index.search("Santa", 0).unwrap().is_empty());
    assert_eq!(index.search("Santa", usize::MAX).unwrap().len(), 2);
    // Operators are plain words: NOT does not exclude, a field prefix does not restrict.
    assert_eq!(
        titles(&index.search("NOT Kinsey", 1).unwrap()),
        ["Kinsey Millhone"]
    );
    assert_eq!(
        titles(&index.search("Na Hong-jin's", 1).unwrap()),
        ["Na Hong-jin"]
    );
    assert!(!index.search(&long, 3).unwrap().is_empty());
}

#[test]
fn a_query_matching_a_title_ranks_it_first() {
    let tmp = tempfile::tempdir().unwrap();
    let index = fixture_index(tmp.path());
    let hits = index.search("Who is Kinsey Millhone?", 5).unwrap();
    assert_eq!(hits[0].title, "Kinsey Millhone");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let hits = index
        .search("which city is Santa Teresa modelled on", 2)
        .unwrap();
    assert_eq!(hits[0].title, "Santa Teresa");
    assert_eq!(hits[0].id, "p4");
}

#[test]
fn title_keys_are_the_title_words_without_the_disambiguation() {
    use dspy_rhai::retrieve::{title_key, TITLE_KEY_MAX_WORDS};
    assert_eq!(
        title_key("The Wailing (film)").as_deref(),
        Some("the wailing")
    );
    assert_eq!(title_key("Na Hong-jin").as_deref(), Some("na hong jin"));
    assert_eq!(
        title_key("&quot;J&quot; Is for Judgment").as_deref(),
        Some("j is for judgment")
    );
    assert_eq!(title_key("AT&amp;T").as_deref(), Some("at t"));
    assert_eq!(title_key("Köln (1990 film)").as_deref(), Some("koln"));
    // A title that is only a parenthetical keeps it.
    assert_eq!(title_key("(film)").as_deref(), Some("film"));
    assert_eq!(title_key(""), None);
    assert_eq!(title_key(" -- "), None);
    let long = ["word"; TITLE_KEY_MAX_WORDS + 1].join(" ");
    assert_eq!(title_key(&long), None);
    let longest = ["word"; TITLE_KEY_MAX_WORDS].join(" ");
    assert_eq!(title_key(&longest).as_deref(), Some(longest.as_str()));
}

#[test]
fn a_title_named_in_the_query_lifts_its_passage() {
    // Two passages with the same words in title and text; only "Blue Harbor"
    // is named, in order, by the query. Without title matching they tie (and
    // the earlier one, "Harbor Blue", comes first).
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![
        r#"{"id": "b", "title": "Harbor Blue (band)", "text": "A fishing town on the northern coast."}"#.to_string(),
        r#"{"id": "a", "title": "Blue Harbor (town)", "text": "A fishing town on the northern coast."}"#.to_string(),
    ];
    for i in 0..10 {
        lines.push(format!(
            r#"{{"id": "f{i}", "title": "Garden {i}", "text": "Roses and tulips."}}"#
        ));
    }
    let corpus = write(dir.path(), "c.jsonl", &lines.join("\n"));
    let out = dir.path().join("index");
    build(&corpus, &out).unwrap();
    // One pass: the second one (title links) would lift both top passages.
    let index = Index::open(&out)
        .unwrap()
        .with_feedback(dspy_rhai::retrieve::Feedback::default());
    let query = "Which coast is Blue Harbor on?";
    let with = index.search(query, 2).unwrap();
    assert_eq!(with[0].id, "a", "{with:?}");
    assert!(with[0].score > with[1].score, "{with:?}");
    let index = index.with_tuning(0.0, 1, 1.0, Some(dspy_rhai::retrieve::COMMON_WORD_SHARE));
    let without = index.search(query, 2).unwrap();
    assert_eq!(without[0].score, without[1].score, "{without:?}");
    assert_eq!(without[0].id, "b", "{without:?}");
    // The bonus goes to the named passage only.
    assert_eq!(with[1].id, "b");
    assert_eq!(with[1].score, without[0].score);
}

#[test]
fn dspy_text_is_title_bar_text() {
    let passage = Passage {
        id: "p".into(),
        title: "Santa Teresa".into(),
        text: "A city.".into(),
        score: 1.0,
    };
    assert_eq!(passage.dspy_text(), "Santa Teresa | A city.");
    let untitled = Passage {
        title: String::new(),
        ..passage
    };
    assert_eq!(untitled.dspy_text(), "A city.");
}

#[test]
fn index_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Index>();
    let tmp = tempfile::tempdir().unwrap();
    let index = Arc::new(fixture_index(tmp.path()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert_eq!(
                        index.search("Gabilan", 1).unwrap()[0].title,
                        "Gabilan Mountains"
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn another_schema_version_is_refused_with_a_rebuild_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_index(tmp.path()).dir().to_path_buf();
    let meta_path = dir.join(META_FILE);
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["schema_version"] = 999.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let err = Index::open(&dir).unwrap_err();
    assert!(
        matches!(err, RetrieveError::SchemaVersion { found: 999, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("schema version 999"), "{message}");
    assert!(
        message.contains("rebuild it with `dspy-rhai index"),
        "{message}"
    );
    // An old index of ours may still be replaced by a rebuild.
    build(&tmp.path().join("c.jsonl"), &dir).unwrap();
    Index::open(&dir).unwrap();
}

#[test]
fn a_missing_index_says_how_to_build_one() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [tmp.path().join("nowhere"), tmp.path().to_path_buf()] {
        let err = Index::open(&dir).unwrap_err();
        assert!(matches!(err, RetrieveError::MissingIndex { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("dspy-rhai index corpora/wiki_abstracts.jsonl.gz"),
            "{err}"
        );
    }
}

#[test]
fn default_index_dir_prefers_the_environment() {
    let data = Some(PathBuf::from("/data"));
    assert_eq!(
        index_dir_from(Some("/idx".into()), data.clone()).unwrap(),
        PathBuf::from("/idx")
    );
    assert_eq!(
        index_dir_from(Some("".into()), data.clone()).unwrap(),
        PathBuf::from("/data/dspy-rhai/index")
    );
    assert_eq!(
        index_dir_from(None, data).unwrap(),
        PathBuf::from("/data/dspy-rhai/index")
    );
    assert!(index_dir_from(None, None).is_err());
    // The real lookup works on this machine one way or the other.
    default_index_dir().unwrap();
}

#[test]
fn shipped_corpus_reads_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/wiki_abstracts.jsonl.gz");
    let mut count = 0;
    for record in CorpusReader::open(&corpus).unwrap() {
        let record = record.unwrap();
        assert!(!record.title.is_empty() && !record.text.is_empty());
        count += 1;
    }
    assert_eq!(count, 27_434);
}

#[test]
fn hotpotqa_gold_titles_are_in_the_shipped_corpus() {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/hotpotqa_dev.jsonl");
    let Ok(questions) = std::fs::read_to_string(&dev) else {
        eprintln!("skipped: {} not present", dev.display());
        return;
    };
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/wiki_abstracts.jsonl.gz");
    let titles: std::collections::HashSet<String> = CorpusReader::open(&corpus)
        .unwrap()
        .map(|r| r.unwrap().title)
        .collect();
    for line in questions.lines().take(200) {
        let q: serde_json::Value = serde_json::from_str(line).unwrap();
        for gold in q["gold_titles"].as_array().unwrap() {
            assert!(titles.contains(gold.as_str().unwrap()), "{gold}");
        }
    }
}

pub(crate) fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dspy-rhai"))
        .args(args)
        .env_remove("DSPY_INDEX")
        .env_remove("DSPY_RETRIEVER")
        .output()
        .unwrap()
}

#[test]
fn cli_index_then_search_json() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let out = tmp.path().join("cli.index");
    let run = cli(&[
        "index",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
        "--memory-mb",
        "32",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("indexed 5 passages (0 bad lines skipped)"),
        "{stdout}"
    );
    assert!(stdout.contains("docs/s"), "{stdout}");

    let run = cli(&[
        "search",
        "Who directed The Wailing film?",
        "--index",
        out.to_str().unwrap(),
        "-k",
        "2",
        "--json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let passages: Vec<Passage> = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(passages.len(), 2);
    assert_eq!(passages[0].title, "The Wailing (film)");
    assert_eq!(passages[0].id, "p1");

    let run = cli(&["search", "Kinsey", "--index", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.starts_with(" 1."), "{stdout}");
    assert!(
        stdout.contains("Kinsey Millhone | Kinsey Millhone is"),
        "{stdout}"
    );

    let run = cli(&[
        "search",
        "x",
        "--index",
        tmp.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("dspy-rhai index corpora/"));
}

#[test]
fn cli_help_describes_every_flag() {
    let help = String::from_utf8(cli(&["index", "--help"]).stdout).unwrap();
    for flag in [
        "--out",
        "--skip-bad-lines",
        "--threads",
        "--memory-mb",
        "--title-boost",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let help = String::from_utf8(cli(&["search", "--help"]).stdout).unwrap();
    for flag in ["--index", "-k", "--json"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn invalid_build_options_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let out = tmp.path().join("out.index");
    let too_small = BuildOptions {
        threads: 2,
        memory_budget_bytes: 20_000_000,
        ..BuildOptions::default()
    };
    let bad_boost = BuildOptions {
        title_boost: -1.0,
        ..small_options()
    };
    for options in [too_small, bad_boost] {
        let err = build_index(&corpus, &out, &options, &|_| {}).unwrap_err();
        assert!(matches!(err, RetrieveError::InvalidOption(_)), "{err:?}");
    }
    assert_eq!(entries(tmp.path()), ["c.jsonl"]);
    // A search-time boost that makes no sense falls back to no boost.
    let index = fixture_index(tmp.path()).with_title_boost(f32::NAN);
    assert_eq!(index.search("Gabilan", 1).unwrap()[0].id, "p5");
}

#[test]
fn a_small_index_is_merged_into_one_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write(tmp.path(), "c.jsonl", &numbered_corpus(3000, None));
    let out = tmp.path().join("out.index");
    let options = BuildOptions {
        threads: 2,
        memory_budget_bytes: 40_000_000,
        ..BuildOptions::default()
    };
    build_index(&corpus, &out, &options, &|_| {}).unwrap();
    let segments = entries(&out)
        .iter()
        .filter(|name| name.ends_with(".idx"))
        .count();
    assert_eq!(segments, 1);
    assert_eq!(Index::open(&out).unwrap().num_docs(), 3000);
}

#[test]
fn words_in_most_passages_are_left_out_unless_nothing_else_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..10)
        .map(|i| {
            let extra = if i == 7 { " zebra" } else { "" };
            format!(r#"{{"id": "{i}", "title": "Doc {i}", "text": "the common words appear in passage {i}{extra}"}}"#)
        })
        .collect();
    let corpus = write(dir.path(), "c.jsonl", &lines.join("\n"));
    let out = dir.path().join("index");
    build(&corpus, &out).unwrap();
    let index = Index::open(&out).unwrap();
    // "the", "common", "words" are in every passage: only "zebra" decides.
    let hits = index.search("the common words zebra", 3).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].id, "7");
    // A query of common words only still finds passages.
    assert_eq!(index.search("the common words", 3).unwrap().len(), 3);
}

#[test]
fn a_title_named_in_a_top_passage_is_the_second_hop() {
    // The question names "Blue Harbor", whose passage names its founder;
    // the founder's passage shares no word with the question, so only the
    // second pass (title links from the best passages) can find it, and it
    // comes after the passage that names it.
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![
        r#"{"id": "town", "title": "Blue Harbor", "text": "A fishing town founded by Ada Quill."}"#
            .to_string(),
        r#"{"id": "founder", "title": "Ada Quill", "text": "An explorer and cartographer."}"#
            .to_string(),
    ];
    for i in 0..10 {
        lines.push(format!(
            r#"{{"id": "f{i}", "title": "Garden {i}", "text": "A fishing garden of roses {i}."}}"#
        ));
    }
    let corpus = write(dir.path(), "c.jsonl", &lines.join("\n"));
    let out = dir.path().join("index");
    build(&corpus, &out).unwrap();
    let index = Index::open(&out).unwrap();
    let query = "Whose name does the fishing town Blue Harbor remember?";
    let ids = |hits: Vec<Passage>| hits.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let with = ids(index.search(query, 3).unwrap());
    assert_eq!(with[..2], ["town", "founder"], "{with:?}");
    let index = index.with_feedback(dspy_rhai::retrieve::Feedback::default());
    let without = ids(index.search(query, 3).unwrap());
    assert_eq!(without[0], "town", "{without:?}");
    assert!(!without.contains(&"founder".to_string()), "{without:?}");
}
