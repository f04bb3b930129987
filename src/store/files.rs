//! Files that hold secrets or personal data (the SQLite store, key files, `.eml` mail) are
//! readable by their owner only, whatever the process's umask: the mode is set on the
//! file itself, not left to the umask.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Owner read and write, nothing for anyone else.
pub const PRIVATE_MODE: u32 = 0o600;

/// Opens `path` for writing (created or truncated) with mode 0600, also when it existed
/// with a wider mode.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_MODE);
    }
    let file = options.open(path)?;
    restrict(&file)?;
    Ok(file)
}

#[cfg(unix)]
fn restrict(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))
}

#[cfg(not(unix))]
fn restrict(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Writes `bytes` to `path`, readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = create_private(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes an existing file private (0600); a missing one is left missing.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_MODE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// The database file of a SQLite store URL, if it names one on disk.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || path.starts_with("file::memory:") {
        return None;
    }
    Some(PathBuf::from(path))
}

/// Prepares the files of a SQLite store: the database, created empty with mode 0600 when
/// missing (SQLite then gives its `-wal` and `-shm` files the database's mode), and all
/// three made private when they exist with a wider mode. Nothing is created when the URL
/// does not ask for it (`mode=rwc`).
pub fn prepare_sqlite(url: &str) -> std::io::Result<()> {
    let Some(db) = sqlite_file(url) else {
        return Ok(());
    };
    if !db.exists() && url.contains("mode=rwc") {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(PRIVATE_MODE);
        }
        match options.open(&db) {
            Ok(f) => restrict(&f)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        make_private(Path::new(&name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/lethe/lethe.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/lethe/lethe.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://lethe.db"),
            Some(PathBuf::from("lethe.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://db/lethe"), None);
    }
}
