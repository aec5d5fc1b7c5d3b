//! Index builds under bad input and interference (issue 12): empty corpora,
//! endless lines, concurrent builds, Ctrl-C; loading into OpenSearch from the
//! CLI; KNNFewShot on the shared in-memory retriever.

use std::path::Path;
use std::process::{Command, Stdio};

use dspy_rhai::data::Example;
use dspy_rhai::retrieve::{build_index, BuildOptions, Index, RetrieveError};
use dspy_rhai::testing::FakeOpenSearch;
use serde_json::json;

use super::common::fields;
use super::retrieve::{cli, fixture_index, jsonl_fixture, numbered_corpus, write};

#[test]
fn an_empty_build_never_replaces_a_good_index() {
    let tmp = tempfile::tempdir().unwrap();
    let old = fixture_index(tmp.path());
    let out = old.dir().to_path_buf();
    drop(old);
    let empty = write(tmp.path(), "empty.jsonl", "\n\n");
    let err = build_index(&empty, &out, &BuildOptions::default(), &|_| {}).unwrap_err();
    assert!(
        matches!(err, RetrieveError::EmptyCorpus { bad_lines: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--allow-empty"), "{err}");
    // Every line bad, skipped: still empty.
    let bad = write(tmp.path(), "bad.jsonl", "{oops\nnot json\n");
    let options = BuildOptions {
        skip_bad_lines: true,
        ..BuildOptions::default()
    };
    let err = build_index(&bad, &out, &options, &|_| {}).unwrap_err();
    assert!(
        matches!(err, RetrieveError::EmptyCorpus { bad_lines: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        Index::open(&out).unwrap().num_docs(),
        5,
        "the old index is kept"
    );
    // The CLI says so too, and --allow-empty builds it.
    let run = cli(&[
        "index",
        empty.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("refusing to build an empty index"));
    let run = cli(&[
        "index",
        empty.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--allow-empty",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(Index::open(&out).unwrap().num_docs(), 0);
}

#[test]
fn an_overlong_corpus_line_is_a_bad_line_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = format!(
        "{}{{\"id\": \"big\", \"text\": \"{}\"}}\n{}",
        numbered_corpus(1, None),
        "x".repeat(dspy_rhai::retrieve::corpus::MAX_LINE_BYTES + 10),
        numbered_corpus(2, None).lines().nth(1).unwrap().to_string() + "\n"
    );
    let corpus = write(tmp.path(), "huge.jsonl", &huge);
    let out = tmp.path().join("out");
    let err = build_index(&corpus, &out, &BuildOptions::default(), &|_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("huge.jsonl:2:") && text.contains("longer than 8 MiB"),
        "{text}"
    );
    let options = BuildOptions {
        skip_bad_lines: true,
        ..BuildOptions::default()
    };
    let report = build_index(&corpus, &out, &options, &|_| {}).unwrap();
    assert_eq!((report.doc_count, report.bad_lines_skipped), (2, 1));
}

#[test]
fn a_second_build_into_the_same_out_says_another_build_is_running() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shared.index");
    let lock_path = tmp.path().join(".shared.index.lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.try_lock().unwrap();
    // The holder (this process, standing in for a running build) wrote its pid.
    let pid = std::process::id();
    std::fs::write(&lock_path, pid.to_string()).unwrap();
    let corpus = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let err = build_index(&corpus, &out, &BuildOptions::default(), &|_| {}).unwrap_err();
    assert!(
        matches!(err, RetrieveError::BuildLocked { pid: Some(p), .. } if p == pid),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("another build is running")
            && err.to_string().contains(&format!("held by pid {pid}")),
        "{err}"
    );
    assert!(!out.exists());
    drop(lock);
    build_index(&corpus, &out, &BuildOptions::default(), &|_| {}).unwrap();
    assert_eq!(Index::open(&out).unwrap().num_docs(), 5);
}

/// The pid of a process that has already ended (a reaped child), as left in
/// a lock file by an earlier build.
fn a_finished_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_lock_held_by_another_process_does_not_name_a_finished_builds_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shared.index");
    let lock_path = tmp.path().join(".shared.index.lock");
    // What `flock .shared.index.lock sleep 4` does after an earlier build
    // (now ended) wrote its pid there: hold the lock, leave the file alone.
    let dead = a_finished_pid();
    std::fs::write(&lock_path, dead.to_string()).unwrap();
    let lock = std::fs::File::open(&lock_path).unwrap();
    lock.try_lock().unwrap();
    let corpus = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let err = build_index(&corpus, &out, &BuildOptions::default(), &|_| {}).unwrap_err();
    assert!(
        matches!(err, RetrieveError::BuildLocked { pid: None, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(!text.contains(&format!("pid {dead}")), "{text}");
    assert!(
        text.contains("held by another process") && text.contains(".shared.index.lock"),
        "{text}"
    );
    assert!(!out.exists());
}

/// `ln -s idx link; dspy-rhai index c --out link` takes the lock of `idx`
/// (so it waits for a build into `idx`), and replaces the index the link
/// points to, leaving the link a link.
#[cfg(unix)]
#[test]
fn index_through_a_symlinked_out_locks_and_replaces_the_index_it_points_to() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("idx");
    let c = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    build_index(&c, &idx, &BuildOptions::default(), &|_| {}).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink("idx", &link).unwrap();
    let seven = write(tmp.path(), "seven.jsonl", &numbered_corpus(7, None));

    // A build into `idx` is running: one into `link` must wait for it.
    let lock = std::fs::File::create(tmp.path().join(".idx.lock")).unwrap();
    lock.try_lock().unwrap();
    let run = cli(&[
        "index",
        seven.to_str().unwrap(),
        "--out",
        link.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(".idx.lock"), "{stderr}");
    drop(lock);

    let run = cli(&[
        "index",
        seven.to_str().unwrap(),
        "--out",
        link.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link).unwrap().is_symlink(),
        "the link was replaced by a directory"
    );
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("idx"));
    assert_eq!(Index::open(&idx).unwrap().num_docs(), 7);
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    assert_eq!(names, ["c.jsonl", "idx", "link", "seven.jsonl"]);

    // Through a symlinked parent directory too: `via/idx` is `idx`.
    let via = tmp.path().join("via");
    std::os::unix::fs::symlink(tmp.path(), &via).unwrap();
    let lock = std::fs::File::create(tmp.path().join(".idx.lock")).unwrap();
    lock.try_lock().unwrap();
    let err = build_index(&c, &via.join("idx"), &BuildOptions::default(), &|_| {}).unwrap_err();
    assert!(matches!(err, RetrieveError::BuildLocked { .. }), "{err:?}");
    drop(lock);
    build_index(&c, &via.join("idx"), &BuildOptions::default(), &|_| {}).unwrap();
    assert_eq!(Index::open(&idx).unwrap().num_docs(), 5);
    assert!(std::fs::symlink_metadata(&via).unwrap().is_symlink());
}

/// A link to nothing is refused, naming the link and where it points, and
/// is left as it was (not replaced by a directory, its target not created).
#[cfg(unix)]
#[test]
fn a_dangling_symlink_out_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink("missing", &link).unwrap();
    let c = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let err = build_index(&c, &link, &BuildOptions::default(), &|_| {}).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&link.display().to_string())
            && text.contains(&tmp.path().join("missing").display().to_string())
            && text.contains("does not exist"),
        "{text}"
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(!tmp.path().join("missing").exists());
    // The same link given as a bare relative --out, from its directory.
    let out = super::common::cli()
        .current_dir(tmp.path())
        .args(["index", "c.jsonl", "--out", "link"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("link is a symbolic link to missing, which does not exist"),
        "{stderr}"
    );
    assert!(!tmp.path().join("missing").exists());

    // A dangling link as the parent, or above it, is named as such (it read
    // "File exists").
    for out in [link.join("sub"), link.join("sub/idx")] {
        let err = build_index(&c, &out, &BuildOptions::default(), &|_| {}).unwrap_err();
        assert!(matches!(err, RetrieveError::DanglingLink { .. }), "{err}");
    }
    // A link to a file, or to `/`, is refused naming the link, and leaves
    // no lock file beside its target.
    let to_file = tmp.path().join("flink");
    std::os::unix::fs::symlink(&c, &to_file).unwrap();
    let to_root = tmp.path().join("root");
    std::os::unix::fs::symlink("/", &to_root).unwrap();
    for link in [&to_file, &to_root] {
        let text = build_index(&c, link, &BuildOptions::default(), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(&format!("output path {} is a link to ", link.display())),
            "{text}"
        );
    }
    assert!(!tmp.path().join(".c.jsonl.lock").exists());

    // A file as the parent, directly or through a link, and a link loop,
    // are said as such (each read "File exists" or "does not exist").
    let file_link = tmp.path().join("lf");
    std::os::unix::fs::symlink(&c, &file_link).unwrap();
    for parent in [&c, &file_link] {
        let text = build_index(&c, &parent.join("idx"), &BuildOptions::default(), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(text.contains("is not a directory"), "{text}");
    }
    std::os::unix::fs::symlink("loop2", tmp.path().join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", tmp.path().join("loop2")).unwrap();
    let text = build_index(
        &c,
        &tmp.path().join("loop1/x"),
        &BuildOptions::default(),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(text.contains("symbolic links"), "{text}");
}

/// `--out .` and `--out sub/..` name no directory of their own to replace.
#[test]
fn an_out_that_names_no_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    for out in [Path::new(".").to_path_buf(), tmp.path().join("sub/..")] {
        let err = build_index(&c, &out, &BuildOptions::default(), &|_| {}).unwrap_err();
        assert!(
            matches!(&err, RetrieveError::InvalidOption(m) if m.contains("does not name a directory")),
            "{out:?}: {err:?}"
        );
    }
    assert!(!tmp.path().join("sub").exists());
}

#[test]
fn ctrl_c_during_index_keeps_the_old_index() {
    let tmp = tempfile::tempdir().unwrap();
    let old = fixture_index(tmp.path());
    let out = old.dir().to_path_buf();
    drop(old);
    let corpus = write(tmp.path(), "big.jsonl", &numbered_corpus(300_000, None));
    let child = Command::new(env!("CARGO_BIN_EXE_dspy-rhai"))
        .args([
            "index",
            corpus.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--threads",
            "1",
            "--memory-mb",
            "20",
        ])
        .env_remove("DSPY_INDEX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the build has started writing, then interrupt it.
    let building = format!(
        ".{}.building-{}",
        out.file_name().unwrap().to_string_lossy(),
        child.id()
    );
    let started = std::time::Instant::now();
    while !tmp.path().join(&building).exists() {
        assert!(started.elapsed().as_secs() < 60, "the build never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("previous index"), "{stderr}");
    let index = Index::open(&out).unwrap();
    assert_eq!(index.num_docs(), 5, "the old index is kept");
    assert_eq!(index.search("Kinsey", 1).unwrap()[0].id, "p3");
}

#[test]
fn cli_index_to_opensearch_then_search_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeOpenSearch::start().unwrap();
    let corpus = write(tmp.path(), "c.jsonl", &jsonl_fixture());
    let uri = format!("opensearch:{}/wiki", fake.url());
    let run = cli(&[
        "index",
        corpus.to_str().unwrap(),
        "--to",
        &uri,
        "--batch-docs",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("loaded 5 passages") && stdout.contains("5 requests"),
        "{stdout}"
    );
    let run = cli(&[
        "search",
        "Kinsey Millhone",
        "--retriever",
        &uri,
        "-k",
        "1",
        "--json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let hits: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(hits[0]["id"], "p3");
    // The same through the environment variable.
    let run = Command::new(env!("CARGO_BIN_EXE_dspy-rhai"))
        .args(["search", "Gabilan", "-k", "1", "--json"])
        .env("DSPY_RETRIEVER", &uri)
        .output()
        .unwrap();
    let hits: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(hits[0]["id"], "p5");
    // --to takes only remote indexes.
    let run = cli(&["index", corpus.to_str().unwrap(), "--to", "tantivy:/tmp/x"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("only opensearch:URL/INDEX"));
}

/// KNNFewShot's index as it was before it moved onto the shared in-memory
/// retriever: its own Tantivy index, one `TEXT` field, the lenient query
/// parser. The reference the new one must agree with.
struct KnnReference {
    index: tantivy::Index,
    reader: tantivy::IndexReader,
    text: tantivy::schema::Field,
    row: tantivy::schema::Field,
}

impl KnnReference {
    fn new(train: &[Example]) -> KnnReference {
        use tantivy::schema::{Schema, STORED, TEXT};
        use tantivy::{doc, TantivyDocument};
        let input_text = |ex: &Example| {
            ex.inputs()
                .values()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut builder = Schema::builder();
        let text = builder.add_text_field("inputs", TEXT);
        let row = builder.add_u64_field("row", STORED);
        let index = tantivy::Index::create_in_ram(builder.build());
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .unwrap();
        for (i, ex) in train.iter().enumerate() {
            writer
                .add_document(doc!(text => input_text(ex), row => i as u64))
                .unwrap();
        }
        writer.commit().unwrap();
        let reader = index.reader().unwrap();
        KnnReference {
            index,
            reader,
            text,
            row,
        }
    }

    fn nearest(&self, query: &str, k: usize) -> Vec<usize> {
        use tantivy::collector::TopDocs;
        use tantivy::query::QueryParser;
        use tantivy::schema::Value as _;
        use tantivy::TantivyDocument;
        let (parsed, _) =
            QueryParser::for_index(&self.index, vec![self.text]).parse_query_lenient(query);
        let searcher = self.reader.searcher();
        searcher
            .search(&parsed, &TopDocs::with_limit(k.max(1)))
            .unwrap()
            .into_iter()
            .filter_map(|(_, addr)| searcher.doc::<TantivyDocument>(addr).ok())
            .filter_map(|d| d.get_first(self.row).and_then(|v| v.as_u64()))
            .map(|r| r as usize)
            .take(k)
            .collect()
    }
}

#[test]
fn knn_on_the_shared_in_memory_retriever_finds_what_its_own_index_found() {
    // HotPotQA train questions when the shared data is there, else a built-in set.
    let shared = ["../shared", "../../shared"]
        .iter()
        .find_map(|d| std::fs::read_to_string(format!("{d}/data/hotpotqa_train.jsonl")).ok());
    let questions: Vec<String> = match &shared {
        Some(text) => text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["question"].as_str().map(str::to_string))
            .take(300)
            .collect(),
        None => [
            "Which magazine was started first Arthur's Magazine or First for Women?",
            "The Oberoi family is part of a hotel company that has a head office in what city?",
            "Musician and satirist Allie Goertz wrote a song about the The Simpsons character Milhouse, who Matt Groening named after who?",
            "What nationality was James Henry Miller's wife?",
            "Cadmium Chloride is slightly soluble in this chemical, it is also called what?",
            "Which tennis player won more Grand Slam titles, Henri Leconte or Jonathan Stark?",
            "Which genus of moth in the world's seventh-largest country contains only one species?",
            "Who was once considered the best kick boxer in the world, however he has been involved in a number of controversies?",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    };
    let train: Vec<Example> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            Example::new(fields(json!({"question": q, "answer": format!("a{i}")})))
                .with_inputs(&["question"])
        })
        .collect();
    let knn = dspy_rhai::optimize::KnnIndex::build(&train).unwrap();
    let reference = KnnReference::new(&train);
    let probes: Vec<String> = questions
        .iter()
        .map(|q| {
            q.split_whitespace()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .chain([
            "the best film of the magazine".to_string(),
            "who".to_string(),
        ])
        .collect();
    let mut compared = 0;
    for probe in &probes {
        // The old parser read `-x`, `+x`, quotes and AND/OR/NOT as operators,
        // and words joined by punctuation (`Inc.suggest`, `Woo-hee`) as
        // phrases; the shared retriever reads words only. Compare where they
        // mean the same.
        let joined = probe.split_whitespace().any(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .contains(|c: char| !c.is_alphanumeric())
        });
        if joined
            || probe.contains([
                '-', '+', '"', ':', '(', ')', '[', ']', '^', '~', '*', '{', '}', '!', '\\', '/',
            ])
            || probe
                .split_whitespace()
                .any(|w| ["AND", "OR", "NOT", "IN"].contains(&w))
        {
            continue;
        }
        let inputs = fields(json!({"question": probe}));
        assert_eq!(
            knn.nearest(&inputs, 5),
            reference.nearest(probe, 5),
            "{probe}"
        );
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} probes compared");
}

/// A build that fills the disk (a 1 MiB tmpfs, mounted in a user namespace)
/// says "no space left on device" with the path, exits 1, and the old index
/// on that disk still answers. Skipped where user namespaces or tmpfs
/// mounts are not allowed.
#[test]
fn a_full_disk_during_index_is_named_and_keeps_the_old_index() {
    let tmp = tempfile::tempdir().unwrap();
    let small = write(tmp.path(), "small.jsonl", &jsonl_fixture());
    let big = write(tmp.path(), "big.jsonl", &numbered_corpus(60_000, None));
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m none '{}'",
            disk.display()
        ))
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: cannot mount a small tmpfs in a user namespace here");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_dspy-rhai");
    let out = disk.join("idx");
    let script = format!(
        "mount -t tmpfs -o size=1m none '{disk}' || exit 99
         '{bin}' index '{small}' --out '{out}' --threads 1 --memory-mb 16 >/dev/null 2>&1 || exit 98
         '{bin}' index '{big}' --out '{out}' --threads 1 --memory-mb 16 >/dev/null 2>'{err}'
         echo \"build exit $?\" > '{log}'
         '{bin}' search 'Wailing horror film' --index '{out}' -k 1 >> '{log}' 2>&1",
        disk = disk.display(),
        small = small.display(),
        big = big.display(),
        out = out.display(),
        err = tmp.path().join("err.txt").display(),
        log = tmp.path().join("log.txt").display(),
    );
    let run = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env_remove("DSPY_INDEX")
        .env_remove("DSPY_RETRIEVER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(run.status.code(), Some(99), "tmpfs mount failed");
    assert_ne!(run.status.code(), Some(98), "small build failed");
    let err = std::fs::read_to_string(tmp.path().join("err.txt")).unwrap();
    let log = std::fs::read_to_string(tmp.path().join("log.txt")).unwrap();
    assert!(log.starts_with("build exit 1\n"), "{log}\n{err}");
    assert!(err.contains("no space left on device"), "{err}");
    assert!(err.contains(&out.display().to_string()), "{err}");
    // The old five-passage index still answers.
    assert!(log.contains("The Wailing"), "{log}");
}

/// A reader opening the index in a tight loop during five rebuilds never
/// fails: the swap is one exchange on Linux, and an open that read the old
/// index's metadata just before the swap is retried (without the retry this
/// test sees "FileDoesNotExist"). No build folders are left behind.
#[cfg(target_os = "linux")]
#[test]
fn readers_never_see_a_missing_index_while_it_is_replaced() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let old = fixture_index(tmp.path());
    let out = old.dir().to_path_buf();
    drop(old);
    let stop = AtomicBool::new(false);
    let (opened, missing) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match Index::open(&out) {
                    Ok(_) => opened.fetch_add(1, Ordering::Relaxed),
                    Err(RetrieveError::MissingIndex { .. }) => {
                        missing.fetch_add(1, Ordering::Relaxed)
                    }
                    // A half-read index is not expected either.
                    Err(e) => panic!("opening during a swap: {e}"),
                };
            }
        });
        for n in 1..=5 {
            let corpus = write(tmp.path(), "n.jsonl", &numbered_corpus(n * 10, None));
            let report = build_index(&corpus, &out, &BuildOptions::default(), &|_| {}).unwrap();
            assert_eq!(report.doc_count as usize, n * 10);
            assert_eq!(Index::open(&out).unwrap().num_docs() as usize, n * 10);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(missing.load(Ordering::Relaxed), 0, "the index went missing");
    assert!(opened.load(Ordering::Relaxed) > 0);
    let debris: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".building-") || n.contains(".old-"))
        .collect();
    assert!(debris.is_empty(), "{debris:?}");
}
