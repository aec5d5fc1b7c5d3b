//! Which files a script may touch: the paths given to `import`,
//! `load_dataset`, `save_program`, `load_program` and `use_index`.
//!
//! A relative path is looked up in the script's folder first, then in the
//! working directory. When access is restricted (the CLI always restricts
//! it), the resolved path must lie inside one of those two folders or a
//! folder given with `--allow-path DIR`; `..` that leaves them, an absolute
//! path elsewhere, or a symlink pointing out are errors.

use std::path::{Component, Path, PathBuf};

/// The folders scripts may reach.
#[derive(Clone, Debug, Default)]
pub struct PathAccess {
    /// The loaded script's folder (relative paths are looked up here first).
    pub script_dir: Option<PathBuf>,
    /// Folders allowed besides the script's folder and the working
    /// directory; `None` means no restriction (the library default).
    pub allowed: Option<Vec<PathBuf>>,
}

impl PathAccess {
    /// Resolves `path` as a script gave it: a relative path being read is
    /// looked up in the script's folder, then in the working directory; a
    /// relative path being written (`for_writing`) is in the working
    /// directory, like every other output path. Errors name the path and
    /// the folders it must lie in.
    pub fn resolve(&self, path: &str, for_writing: bool) -> Result<PathBuf, String> {
        let given = Path::new(path);
        let cwd = std::env::current_dir().map_err(|e| format!("the working directory: {e}"))?;
        let in_script_dir = match &self.script_dir {
            Some(dir) if !for_writing && !given.is_absolute() => {
                Some(absolute(&cwd, dir).join(given)).filter(|p| p.exists())
            }
            _ => None,
        };
        let resolved = in_script_dir.unwrap_or_else(|| absolute(&cwd, given));
        let Some(allowed) = &self.allowed else {
            return Ok(resolved);
        };
        let real = real_path(&normalize(&resolved));
        let mut roots: Vec<PathBuf> = vec![cwd.clone()];
        roots.extend(self.script_dir.iter().map(|d| absolute(&cwd, d)));
        roots.extend(allowed.iter().map(|d| absolute(&cwd, d)));
        if roots
            .iter()
            .any(|root| real.starts_with(real_path(&normalize(root))))
        {
            return Ok(resolved);
        }
        Err(format!(
            "`{path}` is outside the script's folder{} and the working directory ({}); \
             pass --allow-path DIR to let scripts use it",
            self.script_dir
                .as_ref()
                .map(|d| format!(" ({})", absolute(&cwd, d).display()))
                .unwrap_or_default(),
            cwd.display()
        ))
    }
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The path with symlinks resolved as far as it exists (a file about to
/// be written does not exist yet; its folder does).
fn real_path(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(real, |p: PathBuf, part| p.join(part));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// `import "name"` for scripts: `name.rhai` resolved as [`PathAccess`]
/// says, then loaded by Rhai's file resolver.
pub(crate) struct ScriptModules {
    shared: std::sync::Weak<super::Shared>,
    files: rhai::module_resolvers::FileModuleResolver,
}

impl ScriptModules {
    pub(crate) fn new(shared: &std::sync::Arc<super::Shared>) -> Self {
        ScriptModules {
            shared: std::sync::Arc::downgrade(shared),
            files: rhai::module_resolvers::FileModuleResolver::new(),
        }
    }

    fn file(&self, path: &str, pos: rhai::Position) -> Result<String, Box<rhai::EvalAltResult>> {
        let with_extension = if Path::new(path).extension().is_some() {
            path.to_string()
        } else {
            format!("{path}.rhai")
        };
        let shared = self
            .shared
            .upgrade()
            .ok_or_else(|| super::bindings::script_error("import: the host is gone", pos))?;
        let access = shared.paths.read().expect("paths lock").clone();
        access
            .resolve(&with_extension, false)
            .map(|p| p.display().to_string())
            .map_err(|e| super::bindings::script_error(format!("import: {e}"), pos))
    }
}

impl rhai::ModuleResolver for ScriptModules {
    fn resolve_raw(
        &self,
        engine: &rhai::Engine,
        global: &mut rhai::GlobalRuntimeState,
        scope: &mut rhai::Scope,
        path: &str,
        pos: rhai::Position,
    ) -> Result<std::sync::Arc<rhai::Module>, Box<rhai::EvalAltResult>> {
        let file = self.file(path, pos)?;
        self.files.resolve_raw(engine, global, scope, &file, pos)
    }

    fn resolve(
        &self,
        engine: &rhai::Engine,
        source: Option<&str>,
        path: &str,
        pos: rhai::Position,
    ) -> Result<std::sync::Arc<rhai::Module>, Box<rhai::EvalAltResult>> {
        let file = self.file(path, pos)?;
        self.files.resolve(engine, source, &file, pos)
    }
}
