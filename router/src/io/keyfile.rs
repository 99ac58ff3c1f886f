//! The node's secret key on disk: written with mode 0600, refused when
//! readable by anyone but its owner.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::core::identity::{Identity, KeyFileError, search_puzzle};
use crate::io::privilege::{user_name, whoami};

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file does not exist.
    #[error("cannot read key file {path}: {source}; create one with `xorlay keygen --out {path}`")]
    Missing {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but this process may not read it: ownership or
    /// permissions, never a reason for a new identity.
    #[error("cannot read key file {path}: {source}; {detail}")]
    Access {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// Owner, mode, who we run as, and the fix.
        detail: String,
    },
    /// The path names something other than a regular file.
    #[error(
        "key file {path} is not a regular file ({kind}); key_file must name the file `xorlay \
         keygen --out FILE` wrote"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// "a directory", ...
        kind: &'static str,
    },
    /// Reading failed otherwise.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Others may read it.
    #[error(
        "key file {path} has mode {mode:04o}; a secret key must be readable by its owner only: `chmod 600 {path}`"
    )]
    Permissions {
        /// The path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a key file.
    #[error("key file {path}: {source}")]
    Format {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        source: KeyFileError,
    },
    /// Writing failed.
    #[error("cannot write key file {path}: {source}{hint}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// No randomness.
    #[error("cannot get random bytes from the OS: {0}")]
    Random(String),
}

/// Reads the identity at `path`, refusing group- or world-accessible files.
pub fn read(path: &Path) -> Result<Identity, KeyError> {
    let file = std::fs::File::open(path).map_err(|source| open_error(path, source))?;
    let meta = file.metadata().map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.into(),
            kind: if meta.is_dir() {
                "a directory"
            } else {
                "a device, socket or pipe"
            },
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.into(),
            mode,
        });
    }
    let text = std::io::read_to_string(file).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    Identity::from_key_file(&text).map_err(|source| KeyError::Format {
        path: path.into(),
        source,
    })
}

/// Classifies an error of opening the key file: only a missing file calls
/// for `xorlay keygen`; a file we may not read is a matter of ownership or
/// permissions, said with the owner, the mode and who we run as.
pub fn open_error(path: &Path, source: std::io::Error) -> KeyError {
    match source.kind() {
        std::io::ErrorKind::NotFound => KeyError::Missing {
            path: path.into(),
            source,
        },
        std::io::ErrorKind::PermissionDenied => KeyError::Access {
            path: path.into(),
            source,
            detail: access_detail(path, std::fs::metadata(path).ok()),
        },
        _ => KeyError::Read {
            path: path.into(),
            source,
        },
    }
}

/// Why `path` cannot be read by this process and what to do, from its
/// metadata if `stat` worked (else a directory above it is closed to us).
/// Never suggests a new key: the identity is there, only out of reach.
fn access_detail(path: &Path, meta: Option<std::fs::Metadata>) -> String {
    use std::os::unix::fs::MetadataExt;
    let me = whoami();
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let Some(meta) = meta else {
        return format!(
            "a directory on its path is not searchable by xorlay, which runs as {me}; \
             `namei -l {}` shows each one's owner and mode: open them to this user, or run \
             xorlay as the user that owns them (do not make a new key: the node's identity is \
             that file)",
            path.display()
        );
    };
    let owner = match user_name(meta.uid()) {
        Some(name) => format!("uid {} ({name})", meta.uid()),
        None => format!("uid {}", meta.uid()),
    };
    format!(
        "it is owned by {owner}, group {}, mode {:04o}, and xorlay runs as {me}: run xorlay as \
         its owner, or give the file to this user (`chown {euid} {}`, keeping mode 0600); do \
         not make a new key: the node's identity is that file",
        meta.gid(),
        meta.mode() & 0o7777,
        path.display()
    )
}

/// Creates a new identity and writes it to `path` with mode 0600. Refuses to
/// overwrite an existing file unless `force`.
pub fn generate(path: &Path, force: bool) -> Result<Identity, KeyError> {
    generate_with_difficulty(path, force, 0)
}

/// Like [`generate`], searching for a key whose ID solves the S/Kademlia
/// puzzle at `difficulty` bits (about 2^difficulty key generations).
pub fn generate_with_difficulty(
    path: &Path,
    force: bool,
    difficulty: u32,
) -> Result<Identity, KeyError> {
    if !force && path.exists() {
        // Say so before a long search, not after.
        return Err(write_error(path, std::io::ErrorKind::AlreadyExists.into()));
    }
    let mut random_error = None;
    let identity = search_puzzle(difficulty, u64::MAX, || {
        let mut seed = [0u8; 32];
        if let Err(e) = getrandom::getrandom(&mut seed) {
            random_error.get_or_insert(e.to_string());
        }
        seed
    });
    if let Some(e) = random_error {
        return Err(KeyError::Random(e));
    }
    let identity = identity.ok_or_else(|| KeyError::Random("puzzle search ended".into()))?;
    write(path, &identity, force)?;
    Ok(identity)
}

/// Writes `identity` to `path` with mode 0600.
pub fn write(path: &Path, identity: &Identity, force: bool) -> Result<(), KeyError> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let write_err = |source: std::io::Error| {
        let hint = match source.kind() {
            std::io::ErrorKind::AlreadyExists => {
                "; it exists already: pick another path or pass --force to replace it"
            }
            std::io::ErrorKind::NotFound => "; create its directory first",
            _ => "",
        };
        KeyError::Write {
            path: path.into(),
            source,
            hint,
        }
    };
    let mut file = options.open(path).map_err(write_err)?;
    // An existing file keeps its old mode through open(); tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write_err)?;
    file.write_all(identity.to_key_file().as_bytes())
        .map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

fn write_error(path: &Path, source: std::io::Error) -> KeyError {
    let hint = match source.kind() {
        std::io::ErrorKind::AlreadyExists => {
            "; it exists already: pick another path or pass --force to replace it"
        }
        std::io::ErrorKind::NotFound => "; create its directory first",
        _ => "",
    };
    KeyError::Write {
        path: path.into(),
        source,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xorlay-keyfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn generate_writes_0600_and_reads_back() {
        let path = temp_path("gen");
        let identity = generate(&path, false).expect("writable temp dir");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path).expect("readable").node_id(), identity.node_id());
        let again = generate(&path, false).expect_err("exists");
        assert!(again.to_string().contains("--force"), "{again}");
        let replaced = generate(&path, true).expect("forced");
        assert_ne!(replaced.node_id(), identity.node_id());
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn wide_permissions_are_refused_with_the_fix() {
        let path = temp_path("wide");
        generate(&path, false).expect("writable");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read(&path).expect_err("0644 refused").to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn unreadable_file_names_ownership_not_keygen() {
        let path = temp_path("eacces");
        generate(&path, false).expect("writable");
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        let err = open_error(&path, denied).to_string();
        assert!(err.contains("Permission denied"), "{err}");
        assert!(err.contains("mode 0600"), "{err}");
        assert!(err.contains("owned by uid"), "{err}");
        assert!(err.contains("xorlay runs as uid"), "{err}");
        assert!(err.contains("chown"), "{err}");
        assert!(!err.contains("xorlay keygen"), "{err}");
        // A closed directory above the file: stat fails too.
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        let err = open_error(Path::new("/nonexistent/dir/xorlay.key"), denied).to_string();
        assert!(err.contains("namei -l"), "{err}");
        assert!(!err.contains("xorlay keygen"), "{err}");
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let err = read(&std::env::temp_dir())
            .expect_err("a directory")
            .to_string();
        assert!(err.contains("is not a regular file (a directory)"), "{err}");
        assert!(!err.contains("keygen --out /"), "{err}");
    }

    #[test]
    fn missing_file_names_keygen() {
        let err = read(Path::new("/nonexistent/xorlay.key"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("xorlay keygen"), "{err}");
    }
}
