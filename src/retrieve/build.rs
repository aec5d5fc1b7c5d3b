//! Building an index from a corpus file: stream, index on several threads
//! within a fixed memory budget, commit once, then swap the finished index
//! into place so a failed or cancelled build never damages the previous one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tantivy::merge_policy::NoMergePolicy;
use tantivy::{Index as TantivyIndex, IndexWriter};

use super::corpus::CorpusReader;
use super::meta::{IndexMeta, META_FILE};
use super::schema::{
    register_tokenizers, Fields, TitleKeys, SCHEMA_VERSION, TOKENIZER, TOKENIZERS,
};
use super::RetrieveError;

/// Title boost applied at search time unless a build says otherwise; chosen by
/// measurement on HotPotQA dev together with title matching
/// ([`super::TITLE_MATCH_BOOST`]), which now carries most of the title's
/// evidence (see BENCHMARKS.md, "Retrieval quality").
pub const DEFAULT_TITLE_BOOST: f32 = 0.25;

/// Default writer memory budget in MiB: keeps a build's peak RSS under
/// ~300 MB with room to spare while keeping segments large.
pub const DEFAULT_MEMORY_MB: usize = 160;

/// Tantivy's minimum writer memory per indexing thread.
const MIN_MEMORY_PER_THREAD: usize = 15_000_000;

/// Indexes up to this size on disk are merged into a single segment at the end.
const MERGE_BELOW_BYTES: u64 = 64 * 1024 * 1024;

/// How often (in documents) the progress callback is called.
const PROGRESS_EVERY: u64 = 1024;

/// Options of [`build_index`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Skip and count malformed lines instead of stopping at the first one.
    pub skip_bad_lines: bool,
    /// Indexing threads; 0 means one per core, at most 8.
    pub threads: usize,
    /// Total memory budget of the index writer, in bytes, shared by its threads.
    /// Peak memory of a build is bounded by this, not by the corpus size.
    pub memory_budget_bytes: usize,
    /// Boost of title matches relative to text matches, recorded in the index.
    pub title_boost: f32,
    /// Set it (for instance from a Ctrl-C handler) to abandon the build; the
    /// previous index is then left untouched.
    pub cancel: Arc<AtomicBool>,
    /// The analyzer of `title` and `text`, one of [`TOKENIZERS`] (default
    /// [`TOKENIZER`]; another one is for measuring).
    pub tokenizer: &'static str,
    /// Build (and swap in) an index even when the corpus has no passage.
    pub allow_empty: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            skip_bad_lines: false,
            threads: 0,
            memory_budget_bytes: DEFAULT_MEMORY_MB * 1024 * 1024,
            title_boost: DEFAULT_TITLE_BOOST,
            cancel: Arc::new(AtomicBool::new(false)),
            tokenizer: TOKENIZER,
            allow_empty: false,
        }
    }
}

/// What a finished build did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// The index directory.
    pub out: PathBuf,
    /// Passages indexed.
    pub doc_count: u64,
    /// Malformed lines skipped (always 0 without `skip_bad_lines`).
    pub bad_lines_skipped: u64,
    /// Wall-clock seconds, from opening the corpus to the swapped-in index.
    pub seconds: f64,
    /// Size of the index on disk, in bytes.
    pub index_bytes: u64,
}

impl BuildReport {
    /// Indexing throughput.
    pub fn docs_per_sec(&self) -> f64 {
        self.doc_count as f64 / self.seconds.max(1e-9)
    }
}

/// Builds a BM25 index of `corpus` at `out`, replacing any index already there.
///
/// `progress` is called with the number of passages indexed so far, every
/// thousand or so and once at the end. The index is built in a hidden sibling
/// directory of `out` and renamed into place only after its single commit; on
/// any error or cancellation that directory is removed and `out` is untouched.
/// Debris left by a killed build is removed by the next build of the same `out`.
///
/// A symbolic link at `out` (or in its parent path) is followed: the index
/// the link points to is locked and replaced, and the link stays a link.
/// A link to nothing is refused ([`RetrieveError::DanglingLink`]) rather
/// than replaced by a directory or followed to create its target.
///
/// Errors besides bad input: [`RetrieveError::EmptyCorpus`] when no passage
/// was read (unless `allow_empty`), [`RetrieveError::BuildLocked`] when
/// another build into `out` is running (a `.<name>.lock` file beside the
/// real `out` holds an OS lock), [`RetrieveError::DiskFull`], and
/// [`RetrieveError::Cancelled`]; in every case the previous index is kept.
///
/// An existing index is replaced by one atomic exchange of the two
/// directories (Linux `renameat2(RENAME_EXCHANGE)`), so a reader opening
/// `out` finds the old index or the new one. Where the OS or file system
/// cannot exchange, the swap is two renames (old aside, new in) and a
/// reader opening `out` at that instant gets [`RetrieveError::MissingIndex`]
/// and can retry. Indexes already open are unaffected (their files stay
/// mapped).
pub fn build_index(
    corpus: &Path,
    out: &Path,
    options: &BuildOptions,
    progress: &dyn Fn(u64),
) -> Result<BuildReport, RetrieveError> {
    build_index_in_stages(corpus, out, options, &|stage, n| {
        if stage == BuildStage::Passages {
            progress(n);
        }
    })
}

/// What a build is doing, for [`build_index_in_stages`]'s progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStage {
    /// The first read of the corpus: collecting its title keys (the count
    /// is lines read).
    Titles,
    /// The second read: indexing passages (the count is passages indexed).
    Passages,
}

/// [`build_index`], with progress for both reads of the corpus:
/// `progress(stage, n)` about every 1,024 lines, from the calling thread.
/// The last [`BuildStage::Titles`] report is the number of passages and bad
/// lines in the corpus: the total of the [`BuildStage::Passages`] reports
/// that follow (less any bad lines skipped).
pub fn build_index_in_stages(
    corpus: &Path,
    out: &Path,
    options: &BuildOptions,
    progress: &dyn Fn(BuildStage, u64),
) -> Result<BuildReport, RetrieveError> {
    let started = Instant::now();
    let built_at_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let threads = checked_threads(options)?;
    let reader = CorpusReader::open(corpus)?;
    let paths = BuildPaths::new(out)?;
    // Held until this function returns; the OS releases it if the process dies.
    let _lock = paths.lock()?;
    paths.prepare()?;

    let titles = match title_keys(CorpusReader::open(corpus)?, options, &|n| {
        progress(BuildStage::Titles, n)
    }) {
        Ok(titles) => titles,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&paths.tmp);
            return Err(e);
        }
    };
    let counts = match write_index(reader, &titles, &paths.tmp, options, threads, &|n| {
        progress(BuildStage::Passages, n)
    }) {
        Ok(counts) if counts.docs == 0 && !options.allow_empty => {
            let _ = std::fs::remove_dir_all(&paths.tmp);
            return Err(RetrieveError::EmptyCorpus {
                path: corpus.to_path_buf(),
                bad_lines: counts.bad_lines,
            });
        }
        Ok(counts) => counts,
        Err(e) => {
            let e = disk_full_or(e, &paths.tmp, &paths.shown);
            let _ = std::fs::remove_dir_all(&paths.tmp);
            return Err(e);
        }
    };
    let meta = IndexMeta {
        schema_version: SCHEMA_VERSION,
        source: std::fs::canonicalize(corpus).unwrap_or_else(|_| corpus.to_path_buf()),
        doc_count: counts.docs,
        bad_lines_skipped: counts.bad_lines,
        built_at_unix,
        build_seconds: started.elapsed().as_secs_f64(),
        title_boost: options.title_boost,
    };
    // The last point where Ctrl-C still keeps the old index: after this the
    // swap is one exchange (or two renames).
    let written = meta.write(&paths.tmp).and_then(|()| {
        if options.cancel.load(Ordering::Relaxed) {
            Err(RetrieveError::Cancelled)
        } else {
            paths.swap_in()
        }
    });
    if let Err(e) = written {
        let e = disk_full_or(e, &paths.tmp, &paths.shown);
        let _ = std::fs::remove_dir_all(&paths.tmp);
        return Err(e);
    }
    progress(BuildStage::Passages, counts.docs);
    Ok(BuildReport {
        out: out.to_path_buf(),
        doc_count: counts.docs,
        bad_lines_skipped: counts.bad_lines,
        seconds: started.elapsed().as_secs_f64(),
        index_bytes: dir_size(out)?,
    })
}

/// Validates the options and returns the number of indexing threads to use.
fn checked_threads(options: &BuildOptions) -> Result<usize, RetrieveError> {
    if !TOKENIZERS.contains(&options.tokenizer) {
        return Err(RetrieveError::InvalidOption(format!(
            "unknown tokenizer `{}`; expected one of {}",
            options.tokenizer,
            TOKENIZERS.join(", ")
        )));
    }
    if !(options.title_boost.is_finite() && options.title_boost > 0.0) {
        return Err(RetrieveError::InvalidOption(format!(
            "title boost must be a positive number, got {}",
            options.title_boost
        )));
    }
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(8);
    if options.memory_budget_bytes / threads < MIN_MEMORY_PER_THREAD {
        return Err(RetrieveError::InvalidOption(format!(
            "a memory budget of {} MB is too small for {threads} thread(s); \
             each indexing thread needs at least 15 MB",
            options.memory_budget_bytes / 1_000_000
        )));
    }
    Ok(threads)
}

struct Counts {
    docs: u64,
    bad_lines: u64,
}

/// Doc-store block size: small blocks mean less to decompress per fetched
/// passage (a query fetches only k of them, and the 3 best of its first
/// pass). At 1 KiB a block holds about one shipped passage: with the
/// other changes of that round, reading stored passages went from 917 M
/// to 570 M instructions over the dev questions (LZ4 560 M → 191 M), for a
/// 6% larger index (8.6% at 2M synthetic passages; BENCHMARKS.md,
/// "Title-key walk, cheaper second select, 1 KiB doc-store blocks").
/// Readers take any block size, so indexes built with another one still
/// open.
const DOCSTORE_BLOCK_BYTES: usize = 1024;

/// The corpus's title keys: a first pass over the corpus, so each passage's
/// links can be found while it is indexed in the second. A malformed line
/// stops the build here already (as the second pass would, naming its
/// `file:line`), unless `--skip-bad-lines`, when the second pass counts it.
fn title_keys(
    reader: CorpusReader,
    options: &BuildOptions,
    progress: &dyn Fn(u64),
) -> Result<TitleKeys, RetrieveError> {
    let mut titles = TitleKeys::default();
    let mut lines = 0;
    for record in reader {
        if lines % PROGRESS_EVERY == 0 {
            if options.cancel.load(Ordering::Relaxed) {
                return Err(RetrieveError::Cancelled);
            }
            progress(lines);
        }
        lines += 1;
        match record {
            Ok(record) => titles.insert(&record.title),
            Err(RetrieveError::BadLine { .. }) if options.skip_bad_lines => {}
            Err(e) => return Err(e),
        }
    }
    // The last report is the total, which the second read can show.
    progress(lines);
    Ok(titles)
}

/// Streams the corpus into a new index in `dir` and commits once; each
/// passage's links are the keys of `titles` its text names.
fn write_index(
    reader: CorpusReader,
    titles: &TitleKeys,
    dir: &Path,
    options: &BuildOptions,
    threads: usize,
    progress: &dyn Fn(u64),
) -> Result<Counts, RetrieveError> {
    let (schema, fields) = Fields::schema_with(options.tokenizer);
    let settings = tantivy::IndexSettings {
        docstore_blocksize: DOCSTORE_BLOCK_BYTES,
        ..tantivy::IndexSettings::default()
    };
    let index = TantivyIndex::builder()
        .schema(schema)
        .settings(settings)
        .create_in_dir(dir)
        .map_err(|e| {
            RetrieveError::tantivy(format!("creating an index in {}", dir.display()), e)
        })?;
    register_tokenizers(&index);
    let mut writer: IndexWriter = index
        .writer_with_num_threads(threads, options.memory_budget_bytes)
        .map_err(|e| RetrieveError::tantivy("starting the index writer", e))?;
    // No background merges: a merge maps its input segments into memory, so
    // peak RSS would grow with the corpus (780 MB at 2M passages, measured);
    // without them it stays near the writer budget. The price is one segment
    // per writer flush, which slows queries made only of very common words;
    // small indexes are merged once at the end (see `merge_if_small`).
    writer.set_merge_policy(Box::new(NoMergePolicy));
    let mut counts = Counts {
        docs: 0,
        bad_lines: 0,
    };
    for record in reader {
        if options.cancel.load(Ordering::Relaxed) {
            return Err(RetrieveError::Cancelled);
        }
        let record = match record {
            Ok(record) => record,
            Err(RetrieveError::BadLine { .. }) if options.skip_bad_lines => {
                counts.bad_lines += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let doc = fields.document(record, titles);
        writer
            .add_document(doc)
            .map_err(|e| RetrieveError::tantivy("indexing a passage", e))?;
        counts.docs += 1;
        if counts.docs.is_multiple_of(PROGRESS_EVERY) {
            progress(counts.docs);
        }
    }
    if options.cancel.load(Ordering::Relaxed) {
        return Err(RetrieveError::Cancelled);
    }
    writer
        .commit()
        .map_err(|e| RetrieveError::tantivy("committing the index", e))?;
    // Ctrl-C during the commit or the merge is honoured as soon as that
    // step returns (neither can be interrupted inside Tantivy); the old
    // index is then kept.
    if options.cancel.load(Ordering::Relaxed) {
        return Err(RetrieveError::Cancelled);
    }
    merge_if_small(&index, &mut writer, dir)?;
    writer
        .wait_merging_threads()
        .map_err(|e| RetrieveError::tantivy("merging index segments", e))?;
    if options.cancel.load(Ordering::Relaxed) {
        return Err(RetrieveError::Cancelled);
    }
    Ok(counts)
}

/// Merges a small index into one segment (fewer segments, faster queries).
/// Only below [`MERGE_BELOW_BYTES`], so the mapped merge input stays small and
/// peak memory stays bounded whatever the corpus size.
fn merge_if_small(
    index: &TantivyIndex,
    writer: &mut IndexWriter,
    dir: &Path,
) -> Result<(), RetrieveError> {
    let segments = index
        .searchable_segment_ids()
        .map_err(|e| RetrieveError::tantivy("listing index segments", e))?;
    if segments.len() > 1 && dir_size(dir)? <= MERGE_BELOW_BYTES {
        writer
            .merge(&segments)
            .wait()
            .map_err(|e| RetrieveError::tantivy("merging index segments", e))?;
    }
    Ok(())
}

/// `e`, or [`RetrieveError::DiskFull`] when the disk under `dir` is full:
/// Tantivy often reports a failed write as "index writer was killed" (its
/// indexing thread died), so the disk is probed with a small write as well.
fn disk_full_or(e: RetrieveError, dir: &Path, out: &Path) -> RetrieveError {
    if matches!(e, RetrieveError::Cancelled | RetrieveError::BadLine { .. }) {
        return e;
    }
    if mentions_disk_full(&e) || probe_disk_full(dir) {
        return RetrieveError::DiskFull {
            out: out.to_path_buf(),
            dir: dir.to_path_buf(),
        };
    }
    e
}

/// Whether an error (or any error it wraps) is ENOSPC.
pub(crate) fn mentions_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
                return true;
            }
        }
        if err.to_string().contains("No space left on device") {
            return true;
        }
        current = err.source();
    }
    false
}

/// Writes and removes a 1 MiB file in `dir` (or its parent if `dir` is
/// gone); true when that fails for lack of space.
fn probe_disk_full(dir: &Path) -> bool {
    use std::io::Write as _;
    let dir = if dir.is_dir() {
        dir
    } else {
        match dir.parent() {
            Some(p) => p,
            None => return false,
        }
    };
    let probe = dir.join(".dspy-rhai-space-probe");
    let result = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(&vec![0u8; 1 << 20]).and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(()) => false,
        Err(e) => e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28),
    }
}

/// The output directory and its hidden build-time siblings.
struct BuildPaths {
    /// The output as given, for messages.
    shown: PathBuf,
    /// The real output directory ([`real_out`]): what is locked and replaced.
    out: PathBuf,
    name: String,
    parent: PathBuf,
    /// Prefix shared by every temporary sibling of `out`, past or present.
    debris_prefix: String,
    tmp: PathBuf,
    old: PathBuf,
}

impl BuildPaths {
    /// The paths of a build into `out`, after [`real_out`] (which creates
    /// `out`'s parent directory if it is missing).
    fn new(out: &Path) -> Result<BuildPaths, RetrieveError> {
        let real = real_out(out)?;
        let name = dir_name(&real)?;
        let parent = match real.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let debris_prefix = format!(".{name}.building-");
        let pid = std::process::id();
        Ok(BuildPaths {
            shown: out.to_path_buf(),
            out: real,
            name: name.clone(),
            tmp: parent.join(format!("{debris_prefix}{pid}")),
            old: parent.join(format!("{debris_prefix}{pid}-old")),
            parent,
            debris_prefix,
        })
    }

    /// Takes the build lock of `out` (`.<name>.lock` beside it, an OS file
    /// lock released when the guard drops, or when the process ends, however
    /// it ends).
    ///
    /// When it is held, the error names the pid written in the lock file only
    /// if that process is still running: something other than a build (say
    /// `flock`) may hold the lock while the file still names an earlier
    /// build that has ended.
    fn lock(&self) -> Result<BuildLock, RetrieveError> {
        use std::io::{Read as _, Seek as _, Write as _};
        let path = self.parent.join(format!(".{}.lock", self.name));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| RetrieveError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(RetrieveError::BuildLocked {
                    out: self.shown.clone(),
                    lock: path,
                    pid: pid.trim().parse().ok().filter(|&pid| process_is_alive(pid)),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(RetrieveError::io(&path, e)),
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(BuildLock(file))
    }

    /// Checks that `out` may be replaced, removes debris of killed builds and
    /// creates the empty temporary directory.
    fn prepare(&self) -> Result<(), RetrieveError> {
        if self.out.exists() && !is_replaceable(&self.out)? {
            return Err(RetrieveError::NotAnIndex {
                dir: self.shown.clone(),
            });
        }
        let entries =
            std::fs::read_dir(&self.parent).map_err(|e| RetrieveError::io(&self.parent, e))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&self.debris_prefix)
            {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|e| RetrieveError::io(path, e))?;
            }
        }
        std::fs::create_dir(&self.tmp).map_err(|e| RetrieveError::io(&self.tmp, e))
    }

    /// Renames the finished index into place, moving any previous one aside
    /// first and removing it afterwards.
    fn swap_in(&self) -> Result<(), RetrieveError> {
        if !self.out.exists() {
            return std::fs::rename(&self.tmp, &self.out)
                .map_err(|e| RetrieveError::io(&self.out, e));
        }
        // One atomic exchange where the OS and file system have it: readers
        // see the old index or the new one, never no index.
        if exchange(&self.tmp, &self.out)? {
            return std::fs::remove_dir_all(&self.tmp).map_err(|e| RetrieveError::io(&self.tmp, e));
        }
        std::fs::rename(&self.out, &self.old).map_err(|e| RetrieveError::io(&self.out, e))?;
        if let Err(e) = std::fs::rename(&self.tmp, &self.out) {
            let _ = std::fs::rename(&self.old, &self.out);
            return Err(RetrieveError::io(&self.out, e));
        }
        std::fs::remove_dir_all(&self.old).map_err(|e| RetrieveError::io(&self.old, e))
    }
}

/// The last component of `out`, which names the directory to build; `.`,
/// `..` and `/` name none.
fn dir_name(out: &Path) -> Result<String, RetrieveError> {
    match out.file_name() {
        Some(name) => Ok(name.to_string_lossy().into_owned()),
        None => Err(RetrieveError::InvalidOption(format!(
            "output path {} does not name a directory",
            out.display()
        ))),
    }
}

/// Where a build into `out` really goes: `out`'s parent directory resolved
/// to its real path (created first if missing), and a symbolic link at
/// `out` followed to the directory it points to. Every path to one index
/// so takes the same lock, and the swap replaces the index itself, never
/// the link to it (which stays a link).
///
/// A link to nothing (or to a link to nothing) is refused with
/// [`RetrieveError::DanglingLink`]: the directory it points to is not
/// created, and the link is left alone.
fn real_out(out: &Path) -> Result<PathBuf, RetrieveError> {
    // `.` and `sub/..` are refused as written, before anything is resolved
    // (or created); the name is then taken as the OS has it, not lossily.
    dir_name(out)?;
    let name = out.file_name().unwrap_or_default();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Err(e) = std::fs::create_dir_all(parent) {
        // "File exists" hides what is in the way: a link to nothing (the
        // parent or one above it), a link loop, or a file.
        if let Some(dangling) = parent.ancestors().find_map(dangling_link) {
            return Err(dangling);
        }
        return Err(match std::fs::metadata(parent) {
            Err(m) => RetrieveError::io(parent, m),
            Ok(meta) if !meta.is_dir() => RetrieveError::InvalidOption(format!(
                "output path {}: {} is not a directory; choose another --out",
                out.display(),
                parent.display()
            )),
            Ok(_) => RetrieveError::io(parent, e),
        });
    }
    let real_parent = std::fs::canonicalize(parent).map_err(|e| RetrieveError::io(parent, e))?;
    let path = real_parent.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_symlink() => match std::fs::canonicalize(&path) {
            // A link to a file, or to `/`, names no index directory: refused
            // here, naming the link, before a lock file is made beside it.
            Ok(real) if !real.is_dir() || real.file_name().is_none() => {
                Err(RetrieveError::InvalidOption(format!(
                    "output path {} is a link to {}, which is not a directory an index can \
                     be built in; choose another --out",
                    out.display(),
                    real.display()
                )))
            }
            Ok(real) => Ok(real),
            Err(e) => Err(dangling_link(out).unwrap_or_else(|| RetrieveError::io(out, e))),
        },
        _ => Ok(path),
    }
}

/// [`RetrieveError::DanglingLink`] when `link` is a symbolic link whose
/// target does not resolve (a link to nothing, or to a link to nothing),
/// with a relative target joined to the link's directory; `None` for
/// anything else.
fn dangling_link(link: &Path) -> Option<RetrieveError> {
    let is_link = std::fs::symlink_metadata(link).is_ok_and(|m| m.is_symlink());
    let missing = std::fs::metadata(link).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    if !(is_link && missing) {
        return None;
    }
    let target = std::fs::read_link(link).ok()?;
    let target = match link.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target,
    };
    Some(RetrieveError::DanglingLink {
        out: link.to_path_buf(),
        target,
    })
}

/// Whether process `pid` is running (`kill(pid, 0)`, which sends nothing;
/// `EPERM` means it runs as another user). False for 0, for ids beyond
/// `pid_t`, and off Unix, where this is not checked.
fn process_is_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// The held build lock of one output directory ([`BuildPaths::lock`]).
///
/// Dropping it unlocks explicitly rather than only closing the file. An
/// `flock` belongs to the open file description, and a child process that
/// another thread is spawning holds a copy of every descriptor from `fork`
/// until `exec` closes it (`O_CLOEXEC`). Closing alone would then leave the
/// lock held for that moment, and a build that follows at once (the next
/// `build` in a REPL, a test, a loop) would fail with
/// [`RetrieveError::BuildLocked`] naming this very process.
struct BuildLock(std::fs::File);

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Swaps the directories `a` and `b` atomically (Linux `renameat2` with
/// `RENAME_EXCHANGE`, Linux 3.15+ on ext4, xfs, btrfs, tmpfs and others).
/// `Ok(false)` where the OS or file system cannot, so the caller falls back
/// to two renames (a moment with no directory at `b`).
fn exchange(a: &Path, b: &Path) -> Result<bool, RetrieveError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| {
                RetrieveError::InvalidOption(format!("path {} contains a NUL byte", p.display()))
            })
        };
        let (ca, cb) = (c(a)?, c(b)?);
        // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(false),
            _ => Err(RetrieveError::io(b, err)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

/// An existing output may be replaced if it is an index of ours (any schema
/// version) or an empty directory.
fn is_replaceable(out: &Path) -> Result<bool, RetrieveError> {
    if !out.is_dir() {
        return Ok(false);
    }
    if out.join(META_FILE).is_file() {
        return Ok(true);
    }
    let mut entries = std::fs::read_dir(out).map_err(|e| RetrieveError::io(out, e))?;
    Ok(entries.next().is_none())
}

/// Total size of the files directly inside `dir`.
fn dir_size(dir: &Path) -> Result<u64, RetrieveError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RetrieveError::io(dir, e))?;
    let mut total = 0;
    for entry in entries {
        let entry = entry.map_err(|e| RetrieveError::io(dir, e))?;
        let meta = entry
            .metadata()
            .map_err(|e| RetrieveError::io(entry.path(), e))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn exchange_swaps_two_directories_in_one_step() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("new"), "").unwrap();
        std::fs::write(b.join("old"), "").unwrap();
        if !exchange(&a, &b).unwrap() {
            eprintln!("skipped: this file system cannot exchange directories");
            return;
        }
        assert!(b.join("new").exists() && !b.join("old").exists());
        assert!(a.join("old").exists() && !a.join("new").exists());
        // A missing side is an error naming the path, not a silent rename.
        let gone = tmp.path().join("gone");
        let err = exchange(&gone, &b).unwrap_err().to_string();
        assert!(err.contains(&b.display().to_string()), "{err}");
    }

    #[test]
    fn a_dropped_build_lock_is_free_even_while_a_copy_of_its_descriptor_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = BuildPaths::new(&tmp.path().join("out.index")).unwrap();
        let held = paths.lock().unwrap();
        // A second build meanwhile is refused and told which process holds it.
        match paths.lock() {
            Err(RetrieveError::BuildLocked { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()))
            }
            other => panic!("expected BuildLocked, got {:?}", other.map(|_| ())),
        }
        // What a child being spawned by another thread holds between fork
        // and exec: a second descriptor for the same open file description.
        let inherited = held.0.try_clone().unwrap();
        drop(held);
        let again = paths.lock();
        assert!(again.is_ok(), "{:?}", again.map(|_| ()));
        drop(inherited);
    }

    #[cfg(unix)]
    #[test]
    fn only_a_running_process_is_alive() {
        assert!(process_is_alive(std::process::id()));
        // kill(0, 0) and kill(-1, 0) would ask about groups of processes.
        assert!(!process_is_alive(0));
        assert!(!process_is_alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_is_alive(pid));
    }

    #[test]
    fn enospc_anywhere_in_the_chain_is_disk_full() {
        let full = RetrieveError::io("/idx/seg", std::io::Error::from_raw_os_error(28));
        assert!(mentions_disk_full(&full));
        let other = RetrieveError::io("/idx/seg", std::io::Error::from_raw_os_error(13));
        assert!(!mentions_disk_full(&other));
        let dir = tempfile::tempdir().unwrap();
        // A writable directory with space is not full; the probe leaves nothing behind.
        let kept = disk_full_or(
            RetrieveError::InvalidOption("x".into()),
            dir.path(),
            dir.path(),
        );
        assert!(matches!(kept, RetrieveError::InvalidOption(_)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let named = disk_full_or(full, dir.path(), Path::new("/data/idx")).to_string();
        assert!(
            named.contains("no space left on device")
                && named.contains("/data/idx")
                && named.contains(&dir.path().display().to_string()),
            "{named}"
        );
    }
}
