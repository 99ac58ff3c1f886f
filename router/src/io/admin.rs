//! The admin interface: a Unix stream socket. A client writes one request
//! line (`stats`) and reads one JSON line back. Served from the control
//! thread's loop; each client gets a bounded time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one client may take to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest request line accepted.
const REQUEST_LEN_MAX: u64 = 256;

/// Why the admin socket failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Another process serves this path.
    #[error(
        "admin socket {0} is in use by a running xorlay; stop it first or set a different [admin] socket"
    )]
    InUse(PathBuf),
    /// Bind or directory failure.
    #[error(
        "cannot create admin socket {path}: {source}; check that its directory is writable or set [admin] socket"
    )]
    Bind {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Client side: cannot connect.
    #[error(
        "cannot reach the router's admin socket {path}: {source}; is `xorlay run` running with this config?"
    )]
    Connect {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Client side: bad exchange.
    #[error("admin socket {path}: {message}")]
    Protocol {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The listening admin socket; the file is removed on drop.
#[derive(Debug)]
pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminServer {
    /// Binds `path`, replacing a stale socket file left by a crashed router.
    pub fn bind(path: &Path) -> Result<AdminServer, AdminError> {
        let bind_err = |source| AdminError::Bind {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(AdminError::InUse(path.into()));
            }
            log::info!(
                "removing stale admin socket {} left by an earlier run",
                path.display()
            );
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(AdminServer {
            listener,
            path: path.into(),
        })
    }

    /// Waits up to `timeout` for clients and answers each with `respond`.
    /// Returns after the timeout or after serving a bounded number of clients.
    pub fn serve_for(&self, timeout: Duration, mut respond: impl FnMut(&str) -> String) {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.listener),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: pfd is a valid pollfd for the duration of the call; nfds = 1.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ready <= 0 {
            return;
        }
        for _ in 0..16 {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, &mut respond) {
                        log::debug!("admin client: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("admin socket accept: {e}");
                    return;
                }
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(stream: UnixStream, respond: &mut impl FnMut(&str) -> String) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take_limited()).read_line(&mut line)?;
    if line.trim().is_empty() {
        // Closed without a request (e.g. another router probing whether
        // this socket is in use): nothing to answer.
        return Ok(());
    }
    let mut reply = respond(line.trim());
    reply.push('\n');
    (&stream).write_all(reply.as_bytes())
}

trait TakeLimited: std::io::Read + Sized {
    fn take_limited(self) -> std::io::Take<Self> {
        self.take(REQUEST_LEN_MAX)
    }
}
impl<R: std::io::Read> TakeLimited for R {}

/// Client: sends `request` and returns the reply line.
pub fn request(path: &Path, request: &str) -> Result<String, AdminError> {
    let stream = UnixStream::connect(path).map_err(|source| AdminError::Connect {
        path: path.into(),
        source,
    })?;
    let protocol = |e: std::io::Error| AdminError::Protocol {
        path: path.into(),
        message: e.to_string(),
    };
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT * 3))
        .map_err(protocol)?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(protocol)?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(protocol)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(protocol)?;
    if reply.is_empty() {
        return Err(AdminError::Protocol {
            path: path.into(),
            message: "closed without a reply".into(),
        });
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reply_and_stale_socket_replacement() {
        let path =
            std::env::temp_dir().join(format!("xorlay-admin-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // A stale file (nobody listening) is replaced.
        drop(UnixListener::bind(&path).expect("bind temp socket"));
        assert!(path.exists());
        let server = AdminServer::bind(&path).expect("stale socket replaced");
        assert!(matches!(
            AdminServer::bind(&path),
            Err(AdminError::InUse(_))
        ));
        let client = {
            let path = path.clone();
            std::thread::spawn(move || request(&path, "stats"))
        };
        let mut seen = Vec::new();
        // Bounded: 50 slices of 100 ms.
        for _ in 0..50 {
            server.serve_for(Duration::from_millis(100), |req| {
                seen.push(req.to_string());
                "{\"ok\":true}".to_string()
            });
            if !seen.is_empty() {
                break;
            }
        }
        let reply = client.join().expect("client thread").expect("reply");
        assert_eq!(reply.trim(), "{\"ok\":true}");
        assert_eq!(seen, vec!["stats".to_string()]);
        drop(server);
        assert!(!path.exists(), "socket file removed on drop");
    }
}
