//! The persistent response cache, directly and through `Lm::call`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dspy_rhai::lm::config::LmConfig;
use dspy_rhai::lm::{Cache, Lm, LmRequest, LmResponse, Message, Usage};
use dspy_rhai::testing::{MockReply, MockServer};

use crate::lm_client::request;

/// Names the cache directory for [`child_process_cache_user`].
const CHILD_DIR_VAR: &str = "DSPY_RHAI_TEST_CHILD_CACHE_DIR";

fn response(text: &str) -> LmResponse {
    LmResponse {
        choices: vec![text.to_string()],
        usage: Usage {
            prompt_tokens: 3,
            completion_tokens: 1,
        },
        model: "m".to_string(),
    }
}

/// An LM on `server` caching in `dir`, configured without the environment.
fn lm(server: &MockServer, dir: &Path, api_key: Option<&str>) -> Lm {
    LmConfig {
        model: Some("openai/gpt-4o-mini".into()),
        api_base: Some(server.base_url()),
        api_key: api_key.map(str::to_string),
        cache_dir: Some(dir.to_path_buf()),
        ..LmConfig::default()
    }
    .build_with_env(&|_| None)
    .unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn second_identical_call_is_a_hit() {
    let server = MockServer::start(|_| MockReply::chat("Paris")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lm = lm(&server, dir.path(), None);
    let req = request("gpt-4o-mini", "Capital of France?");

    let first = lm.call(&req).unwrap();
    let second = lm.call(&req).unwrap();

    assert!(!first.cache_hit);
    assert!(second.cache_hit);
    assert_eq!(second.choices, vec!["Paris"]);
    assert_eq!(second.usage, Usage::default());
    assert_eq!(server.request_count(), 1);
    let totals = lm.totals();
    assert_eq!((totals.calls, totals.cache_hits), (2, 1));
}

#[test]
fn a_different_rollout_id_is_a_miss() {
    let server = MockServer::start(|_| MockReply::chat("Paris")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lm = lm(&server, dir.path(), None);
    let mut req = request("gpt-4o-mini", "Capital of France?");

    lm.call(&req).unwrap();
    req.rollout_id = Some(1);
    assert!(!lm.call(&req).unwrap().cache_hit);
    req.rollout_id = Some(2);
    assert!(!lm.call(&req).unwrap().cache_hit);
    req.rollout_id = Some(1);
    assert!(lm.call(&req).unwrap().cache_hit);
    assert_eq!(server.request_count(), 3);
}

#[test]
fn the_key_covers_the_request_but_not_the_endpoint() {
    let base = request("m", "q");
    let key = Cache::key(&base);
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(key, Cache::key(&base.clone()));
    let variants = [
        LmRequest {
            model: "m2".into(),
            ..base.clone()
        },
        LmRequest {
            temperature: Some(0.7),
            ..base.clone()
        },
        LmRequest {
            max_tokens: None,
            ..base.clone()
        },
        LmRequest {
            n: 2,
            ..base.clone()
        },
        LmRequest {
            json_mode: true,
            response_schema: None,
            ..base.clone()
        },
        LmRequest {
            rollout_id: Some(0),
            ..base.clone()
        },
        request("m", "q "),
    ];
    for variant in &variants {
        assert_ne!(Cache::key(variant), key, "{variant:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let one = MockServer::start(|_| MockReply::chat("from one")).unwrap();
    let two = MockServer::start(|_| MockReply::chat("from two")).unwrap();
    let req = request("gpt-4o-mini", "q");
    lm(&one, dir.path(), Some("key-one")).call(&req).unwrap();
    let hit = lm(&two, dir.path(), Some("key-two")).call(&req).unwrap();
    assert!(hit.cache_hit);
    assert_eq!(hit.choices, vec!["from one"]);
    assert_eq!(two.request_count(), 0);
}

#[test]
fn concurrent_writers_and_readers() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(dir.path()).unwrap());
    let shared: Vec<String> = (0..8)
        .map(|i| Cache::key(&request("m", &format!("shared {i}"))))
        .collect();
    let shared = Arc::new(shared);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let cache = Arc::clone(&cache);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let own = Cache::key(&request("m", &format!("own {t} {i}")));
                    cache.put(&own, &response(&format!("own {t} {i}")));
                    assert_eq!(cache.get(&own), Some(response(&format!("own {t} {i}"))));

                    let key = &shared[i % shared.len()];
                    cache.put(key, &response(&format!("shared by {t}")));
                    let seen = cache.get(key).expect("a shared entry is never torn");
                    assert!(seen.choices[0].starts_with("shared by "), "{seen:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = files(dir.path());
    assert_eq!(
        all.len(),
        16 * 40 + 8,
        "one file per entry, no temp files left"
    );
    assert!(all
        .iter()
        .all(|p| p.extension().is_some_and(|e| e == "json")));
}

#[test]
fn two_instances_on_one_directory_share_entries() {
    let dir = tempfile::tempdir().unwrap();
    let a = Cache::open(dir.path()).unwrap();
    let b = Cache::open(dir.path()).unwrap();
    let key = Cache::key(&request("m", "q"));

    assert_eq!(b.get(&key), None);
    a.put(&key, &response("first"));
    assert_eq!(b.get(&key), Some(response("first")));
    b.put(&key, &response("second"));
    assert_eq!(a.get(&key), Some(response("second")));
}

#[test]
fn a_second_process_shares_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    cache.put(
        &Cache::key(&request("m", "parent")),
        &response("from parent"),
    );

    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "cache::child_process_cache_user",
            "--exact",
            "--ignored",
            "--quiet",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();

    assert!(status.success());
    assert_eq!(
        cache.get(&Cache::key(&request("m", "child"))),
        Some(response("from child"))
    );
}

/// Runs only as the child of [`a_second_process_shares_entries`].
#[test]
#[ignore = "child process of a_second_process_shares_entries"]
fn child_process_cache_user() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return;
    };
    let cache = Cache::open(Path::new(&dir)).unwrap();
    assert_eq!(
        cache.get(&Cache::key(&request("m", "parent"))),
        Some(response("from parent"))
    );
    cache.put(&Cache::key(&request("m", "child")), &response("from child"));
}

#[test]
fn corrupt_entries_are_misses_and_get_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let key = Cache::key(&request("m", "q"));
    cache.put(&key, &response("good"));
    let [file] = files(dir.path()).try_into().unwrap();
    let good = std::fs::read(&file).unwrap();

    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    assert_eq!(cache.get(&key), None, "truncated");
    std::fs::write(&file, b"\0\xffgarbage").unwrap();
    assert_eq!(cache.get(&key), None, "garbage");
    std::fs::write(&file, b"").unwrap();
    assert_eq!(cache.get(&key), None, "empty");

    cache.put(&key, &response("again"));
    assert_eq!(cache.get(&key), Some(response("again")));

    // An entry copied to another key's place does not answer for it.
    let other = Cache::key(&request("m", "other"));
    let other_file = cache.root().join(&other[..2]).join(format!("{other}.json"));
    std::fs::create_dir_all(other_file.parent().unwrap()).unwrap();
    std::fs::copy(&file, &other_file).unwrap();
    assert_eq!(cache.get(&other), None);
    assert_eq!(cache.get("../../etc/passwd"), None);
}

#[test]
fn write_errors_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    // Replace the entry directory with a file so every write fails.
    std::fs::remove_dir_all(cache.root()).unwrap();
    std::fs::write(cache.root(), b"not a directory").unwrap();
    let key = Cache::key(&request("m", "q"));
    cache.put(&key, &response("lost"));
    cache.put(&key, &response("lost again"));
    assert_eq!(cache.get(&key), None);
}

#[test]
fn an_entry_with_no_choices_is_a_miss() {
    let server = MockServer::start(|_| MockReply::chat("fresh")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lm = lm(&server, dir.path(), None);
    let req = request("gpt-4o-mini", "q");
    let key = Cache::key(&req);
    let cache = Cache::open(dir.path()).unwrap();
    let empty = LmResponse {
        choices: vec![],
        ..response("unused")
    };
    cache.put(&key, &empty);
    assert_eq!(cache.get(&key), None);

    let completion = lm.call(&req).unwrap();
    assert!(!completion.cache_hit);
    assert_eq!(completion.choices, vec!["fresh"]);
    assert_eq!(server.request_count(), 1);
    assert!(
        lm.call(&req).unwrap().cache_hit,
        "the good answer replaced it"
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_in_the_cache_is_skipped_not_read() {
    let server = MockServer::start(|_| MockReply::chat("fresh")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lm = lm(&server, dir.path(), None);
    let req = request("gpt-4o-mini", "q");
    let key = Cache::key(&req);
    let cache = Cache::open(dir.path()).unwrap();
    let path = cache.root().join(&key[..2]).join(format!("{key}.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path and mode.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);

    // Opening the FIFO for a blocking read would hang here forever.
    assert_eq!(cache.get(&key), None);
    let completion = lm.call(&req).unwrap();
    assert!(!completion.cache_hit);
    assert_eq!(server.request_count(), 1);
}

#[test]
fn an_unusable_cache_directory_is_a_warning_not_a_failed_run() {
    let server = MockServer::start(|_| MockReply::chat("fine")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A directory below a regular file can never be created (even by root).
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let lm = lm(&server, &blocker.join("cache"), None);
    let req = request("gpt-4o-mini", "q");
    assert_eq!(lm.call(&req).unwrap().choices, vec!["fine"]);
    assert_eq!(lm.call(&req).unwrap().choices, vec!["fine"]);
    assert_eq!(server.request_count(), 2, "no cache, so no hits");
}

#[test]
fn the_api_key_never_reaches_the_cache() {
    const SECRET: &str = "sk-SECRET-never-store-me";
    let server = MockServer::start(|_| MockReply::chat("answer")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lm = lm(&server, dir.path(), Some(SECRET));
    for q in ["one", "two", "three"] {
        lm.call(&lm.request(vec![Message::new("user", q)], &Default::default()))
            .unwrap();
    }
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    let entries = files(dir.path());
    assert_eq!(entries.len(), 3);
    for file in entries {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(SECRET), "{}", file.display());
        assert!(!file.to_string_lossy().contains(SECRET));
    }
}
