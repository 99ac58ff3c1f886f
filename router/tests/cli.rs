//! The `xorlay` command as an operator meets it: key generation, config
//! checks, and the one-line errors for every mistake `run` can meet. Cases
//! that reach XDP run inside a namespace of their own.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Daemon, TestNetns};

const XORLAY: &str = env!("CARGO_BIN_EXE_xorlay");
/// Longest a router may take to start, or to stop after a signal.
const TIMEOUT: Duration = Duration::from_secs(20);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("xorlay-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn xorlay(args: &[&str]) -> Output {
    Command::new(XORLAY)
        .args(args)
        .output()
        .expect("run xorlay")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The run failed with exactly one `xorlay: error:` line containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) -> String {
    assert_error_text(out.status.success(), &stderr(out), needle)
}

/// [`assert_one_line_error`] on an exit status and a log; returns the line.
fn assert_error_text(success: bool, err: &str, needle: &str) -> String {
    assert!(!success, "expected failure, got success; stderr: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("xorlay: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "error {:?} does not mention {needle:?}",
        lines[0]
    );
    lines[0].to_string()
}

fn keygen(path: &Path) -> String {
    let out = xorlay(&["keygen", "--out", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "keygen failed: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn keygen_writes_0600_and_prints_the_id() {
    let dir = TempDir::new("keygen");
    let key = dir.path("node.key");
    let id = keygen(&key);
    assert_eq!(id.len(), 64, "node ID is 64 hex digits: {id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&key)
        .expect("key written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let again = xorlay(&["keygen", "--out", key.to_str().expect("utf-8")]);
    assert_one_line_error(&again, "--force");
    let shown = xorlay(&["id", "--key", key.to_str().expect("utf-8")]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), id);
}

#[test]
fn config_errors_are_one_line_and_name_the_fix() {
    let dir = TempDir::new("config");
    let missing = xorlay(&["run", "--config", "/nonexistent/xorlay.toml"]);
    assert_one_line_error(&missing, "cannot read config");

    let bad = dir.path("bad.toml");
    std::fs::write(
        &bad,
        "key_file = \"k\"\n[underlay]\nlisten = \"0.0.0.0:0\"\n",
    )
    .expect("write");
    assert_one_line_error(
        &xorlay(&["run", "--config", bad.to_str().expect("utf-8")]),
        "fixed UDP port",
    );

    let unknown = dir.path("unknown.toml");
    std::fs::write(&unknown, "key_file = \"k\"\nneighbours = []\n").expect("write");
    assert_one_line_error(
        &xorlay(&["check", "--config", unknown.to_str().expect("utf-8")]),
        "neighbours",
    );

    let portless = dir.path("portless.toml");
    std::fs::write(
        &portless,
        "key_file = \"k\"\n[control]\nseeds = [\"1.2.3.4\"]\n",
    )
    .expect("write");
    let line = assert_one_line_error(
        &xorlay(&["check", "--config", portless.to_str().expect("utf-8")]),
        "seed \"1.2.3.4\": missing port; write 1.2.3.4:PORT",
    );
    assert!(!line.contains("invalid socket address syntax"), "{line}");

    let nokey = dir.path("nokey.toml");
    std::fs::write(&nokey, "key_file = \"absent.key\"\n").expect("write");
    assert_one_line_error(
        &xorlay(&["run", "--config", nokey.to_str().expect("utf-8")]),
        "xorlay keygen",
    );

    let key = dir.path("wide.key");
    keygen(&key);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let wide = dir.path("wide.toml");
    std::fs::write(&wide, "key_file = \"wide.key\"\n").expect("write");
    assert_one_line_error(
        &xorlay(&["run", "--config", wide.to_str().expect("utf-8")]),
        "chmod 600",
    );

    let stats = xorlay(&[
        "stats",
        "--socket",
        dir.path("none.sock").to_str().expect("utf-8"),
    ]);
    assert_one_line_error(&stats, "xorlay run");
}

#[test]
fn check_accepts_a_good_config() {
    let dir = TempDir::new("check");
    let key = dir.path("node.key");
    let id = keygen(&key);
    let config = dir.path("ok.toml");
    std::fs::write(
        &config,
        "key_file = \"node.key\"\n[[neighbor]]\nid = \"1111111111111111111111111111111111111111111111111111111111111111\"\naddress = \"198.18.0.2:4799\"\n",
    )
    .expect("write");
    let out = check_in_netns(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
}

/// `xorlay check --config CONFIG` in a namespace of its own (it binds a
/// probe socket to the overlay port and looks up interfaces).
fn check_in_netns(config: &Path) -> Output {
    let ns = TestNetns::new("cli-check");
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args([XORLAY, "check", "--config", config.to_str().expect("utf-8")])
        .output()
        .expect("run xorlay check")
}

#[test]
fn check_reports_every_problem_run_would_meet_on_this_host() {
    let dir = TempDir::new("hostcheck");
    keygen(&dir.path("node.key"));
    let config = dir.path("host.toml");
    std::fs::write(
        &config,
        format!(
            "key_file = \"node.key\"\n\
             [underlay]\ninterfaces = [\"xlnope0\"]\n\
             [admin]\nsocket = \"{}\"\n\
             [control]\npeers_file = \"/nonexistent-xorlay/peers\"\n\
             [xdp]\npin_dir = \"{}\"\n",
            dir.path("a.sock").display(),
            dir.path("pins").display()
        ),
    )
    .expect("write");
    let out = check_in_netns(&config);
    let err = stderr(&out);
    assert_one_line_error(&out, "3 problem(s) on this host");
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("xorlay: problem:"))
        .collect();
    assert_eq!(problems.len(), 3, "{err}");
    for needle in [
        "xlnope0 does not exist in this network namespace",
        "mkdir -p /nonexistent-xorlay",
        "is not on a bpf filesystem",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle:?}: {err}"
        );
    }
}

fn netns_run(ns: &TestNetns, prefix: &[&str], config: &Path) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(prefix)
        .args([XORLAY, "run", "--config", config.to_str().expect("utf-8")])
        .output()
        .expect("run xorlay in namespace")
}

#[test]
fn missing_interface_is_named() {
    let ns = TestNetns::new("cli-if");
    let dir = TempDir::new("iface");
    keygen(&dir.path("node.key"));
    let config = dir.path("iface.toml");
    std::fs::write(
        &config,
        format!(
            "key_file = \"node.key\"\n[underlay]\ninterfaces = [\"xlnope0\"]\n[admin]\nsocket = \"{}\"\n",
            dir.path("a.sock").display()
        ),
    )
    .expect("write");
    let out = netns_run(&ns, &[], &config);
    assert_one_line_error(&out, "xlnope0");
    assert!(
        stderr(&out).contains("ip link"),
        "the error says how to list interfaces: {}",
        stderr(&out)
    );
}

#[test]
fn missing_privilege_is_named() {
    let ns = TestNetns::new("cli-priv");
    let dir = TempDir::new("priv");
    let key = dir.path("node.key");
    keygen(&key);
    // The unprivileged user must be able to read its key and reach its files.
    for path in [&dir.0, &key] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown to nobody");
    }
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let config = dir.path("priv.toml");
    std::fs::write(
        &config,
        format!(
            "key_file = \"node.key\"\n[underlay]\ninterfaces = [\"lo\"]\n[admin]\nsocket = \"{}\"\n",
            dir.path("a.sock").display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))
        .expect("chmod config");
    // `lo` is the test namespace's own loopback, never the host's.
    let out = netns_run(
        &ns,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
        &config,
    );
    let err = stderr(&out);
    assert_one_line_error(&out, "xorlay: error:");
    assert!(
        err.contains("root") || err.contains("CAP_BPF"),
        "error names the privilege: {err}"
    );
}

#[test]
fn keygen_difficulty_makes_keys_that_meet_the_puzzle() {
    let dir = TempDir::new("puzzle");
    let key = dir.path("hard.key");
    let out = xorlay(&[
        "keygen",
        "--out",
        key.to_str().expect("utf-8"),
        "--difficulty",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id: xorlay::core::NodeId = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("an ID");
    assert!(xorlay::core::identity::puzzle_bits(&id) >= 8);
    let config = dir.path("hard.toml");
    std::fs::write(
        &config,
        "key_file = \"hard.key\"\n[control]\ndifficulty = 8\n",
    )
    .expect("write");
    let ok = check_in_netns(&config);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // A key below the network's difficulty is refused, and the error says how to make one.
    let weak = dir.path("weak.key");
    let weak_id: xorlay::core::NodeId = {
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 64, "no weak key in 64 tries");
            let _ = std::fs::remove_file(&weak);
            let id = keygen(&weak).parse().expect("an ID");
            if xorlay::core::identity::puzzle_bits(&id) < 8 {
                break id;
            }
        }
    };
    assert!(xorlay::core::identity::puzzle_bits(&weak_id) < 8);
    std::fs::write(
        &config,
        "key_file = \"weak.key\"\n[control]\ndifficulty = 8\n",
    )
    .expect("write");
    assert_one_line_error(&check_in_netns(&config), "--difficulty 8");
    let huge = xorlay(&[
        "keygen",
        "--out",
        dir.path("x.key").to_str().expect("utf-8"),
        "--difficulty",
        "99",
    ]);
    assert!(
        !huge.status.success(),
        "difficulty over the limit is refused"
    );
}

/// `xorlay run --config CONFIG` in `ns` behind `prefix` (setpriv, ...),
/// logging to `log`.
fn start_in(ns: &TestNetns, tag: &str, prefix: &[&str], config: &Path, log: PathBuf) -> Daemon {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.name])
        .args(prefix)
        .args([XORLAY, "run", "--config", config.to_str().expect("utf-8")])
        .env("RUST_LOG", "info");
    Daemon::spawn(tag, command, log)
}

/// A config in `dir` with key `node.key` (made here), XDP in generic mode on
/// `interfaces` of the test namespace, one small worker, the admin socket
/// and peers file in `dir`, and `extra` appended.
fn lab_config(dir: &TempDir, name: &str, interfaces: &str, extra: &str) -> PathBuf {
    if !dir.path("node.key").exists() {
        keygen(&dir.path("node.key"));
    }
    let config = dir.path(name);
    std::fs::write(
        &config,
        format!(
            "key_file = \"node.key\"\n\
             [underlay]\nlisten = \"0.0.0.0:4799\"\ninterfaces = [{interfaces}]\nxdp_mode = \"generic\"\n\
             [dataplane]\nworkers = 1\nbuffer_count = 64\n\
             [admin]\nsocket = \"{}\"\n\
             [control]\npeers_file = \"peers\"\n{extra}",
            dir.path(&format!("{name}.sock")).display()
        ),
    )
    .expect("write config");
    config
}

/// XDP program on `dev` in `ns`, as `ip link` shows it.
fn has_xdp(ns: &TestNetns, dev: &str) -> bool {
    ns.ip(&["-d", "link", "show", "dev", dev]).contains("xdp")
}

#[test]
fn missing_perfmon_is_named_not_blamed_on_the_verifier() {
    let ns = TestNetns::new("cli-cap");
    let dir = TempDir::new("cap");
    let config = lab_config(&dir, "cap.toml", "\"lo\"", "");
    // Root with CAP_BPF and CAP_NET_ADMIN only, as an older error advised.
    let mut router = start_in(
        &ns,
        "capless",
        &["setpriv", "--bounding-set=-all,+bpf,+net_admin"],
        &config,
        dir.path("cap.log"),
    );
    let status = router.wait_exit(TIMEOUT);
    let line = assert_error_text(status.success(), &router.log(), "lacks CAP_PERFMON");
    assert!(!line.contains("verifier"), "{line}");
    assert!(
        line.contains("CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"),
        "{line}"
    );
    assert!(!has_xdp(&ns, "lo"), "nothing attached");
}

#[test]
fn sighup_is_logged_and_ignored_and_sigterm_stops_cleanly() {
    let ns = TestNetns::new("cli-hup");
    let dir = TempDir::new("hup");
    let config = lab_config(&dir, "hup.toml", "\"lo\"", "");
    let mut router = start_in(&ns, "router", &[], &config, dir.path("hup.log"));
    router.wait_for(" up: ", TIMEOUT);
    assert!(has_xdp(&ns, "lo"), "XDP attached");
    for (signal, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
    ] {
        router.signal(signal);
        router.wait_for(&format!("{name} received and ignored"), TIMEOUT);
    }
    // Still serving: the admin socket answers.
    let stats = xorlay(&[
        "stats",
        "--socket",
        dir.path("hup.toml.sock").to_str().expect("utf-8"),
    ]);
    assert!(
        stats.status.success(),
        "{}\n{}",
        stderr(&stats),
        router.log()
    );
    assert!(
        router.exited().is_none(),
        "died on a signal:\n{}",
        router.log()
    );
    router.signal(libc::SIGTERM);
    let status = router.wait_exit(TIMEOUT);
    assert!(status.success(), "{status}\n{}", router.log());
    assert!(router.log().contains("stopped cleanly"), "{}", router.log());
    assert!(!has_xdp(&ns, "lo"), "XDP detached at exit");
    assert!(dir.path("peers").exists(), "peers saved at exit");
}

#[test]
fn unreadable_key_names_ownership_never_a_new_key() {
    let dir = TempDir::new("eacces");
    let key = dir.path("node.key");
    keygen(&key); // root's, mode 0600
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let config = dir.path("eacces.toml");
    std::fs::write(&config, "key_file = \"node.key\"\n").expect("write");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for command in ["check", "run"] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args([XORLAY, command, "--config", config.to_str().expect("utf-8")])
            .output()
            .expect("run setpriv");
        // As nobody, `check` finds more (e.g. no admin socket directory).
        assert!(!out.status.success(), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        let Some(line) = err.lines().find(|l| l.contains("cannot read key file")) else {
            panic!("{command}: the key file is not named: {err}");
        };
        assert!(line.contains("Permission denied"), "{command}: {line}");
        for needle in [
            key.to_str().expect("utf-8"),
            "owned by uid 0 (root)",
            "mode 0600",
            "runs as uid 65534",
            "chown 65534",
        ] {
            assert!(
                line.contains(needle),
                "{command}: {needle:?} missing: {line}"
            );
        }
        assert!(!line.contains("keygen"), "{command}: {line}");
    }
    // A directory where the key should be.
    std::fs::create_dir(dir.path("dir.key")).expect("mkdir");
    std::fs::write(&config, "key_file = \"dir.key\"\n").expect("write");
    let line = assert_one_line_error(
        &xorlay(&["check", "--config", config.to_str().expect("utf-8")]),
        "is not a regular file (a directory)",
    );
    assert!(!line.contains("create one"), "{line}");
}

/// Runs `xorlay run` in `ns` to its exit (bounded) and returns its
/// one error line, which must contain `needle`.
fn run_error(ns: &TestNetns, dir: &TempDir, config: &Path, needle: &str) -> String {
    let name = config.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    let mut run = start_in(ns, name, &[], config, dir.path(&format!("{name}.log")));
    let status = run.wait_exit(TIMEOUT);
    assert_error_text(status.success(), &run.log(), needle)
}

#[test]
fn a_second_router_is_refused_naming_the_first() {
    let ns = TestNetns::new("cli-two");
    let dir = TempDir::new("two");
    let config = lab_config(&dir, "one.toml", "\"lo\"", "");
    let mut first = start_in(&ns, "first", &[], &config, dir.path("first.log"));
    first.wait_for(" up: ", TIMEOUT);
    let pid = first.pid();
    let holder = format!("xorlay (pid {pid})");

    // The same config: the port is taken (checked before XDP is touched).
    let line = run_error(&ns, &dir, &config, &holder);
    assert!(line.contains("another xorlay router"), "{line}");
    assert!(line.contains(&format!("kill {pid}")), "{line}");
    assert!(line.contains("pin_dir"), "names the hot restart: {line}");
    assert!(!line.contains("xdp off"), "{line}");
    // `check` says so too.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args([XORLAY, "check", "--config", config.to_str().expect("utf-8")])
        .output()
        .expect("run xorlay check");
    assert_one_line_error(&out, &holder);
    // Without XDP, SO_REUSEPORT would have let it share the port silently.
    let no_xdp = lab_config(&dir, "noxdp.toml", "", "");
    run_error(&ns, &dir, &no_xdp, &holder);
    // Another port, the same interface: the XDP link's holder is named.
    let other_port = lab_config(&dir, "port.toml", "\"lo\"", "");
    let text = std::fs::read_to_string(&other_port).expect("read");
    std::fs::write(&other_port, text.replace(":4799", ":4800")).expect("write");
    let line = run_error(&ns, &dir, &other_port, &holder);
    assert!(
        line.contains("XDP on lo is held by another xorlay"),
        "{line}"
    );
    assert!(!line.contains("xdp off"), "{line}");

    assert!(first.exited().is_none(), "the first died:\n{}", first.log());
    assert!(has_xdp(&ns, "lo"), "the first router's XDP stays");
    first.signal(libc::SIGTERM);
    let status = first.wait_exit(TIMEOUT);
    assert!(status.success(), "{status}\n{}", first.log());
}

/// A router without XDP in `ns` listening on `port`, its key in `dir`
/// (made here), `control` appended to its [control] table; returns the
/// config and the node ID.
fn plain_router(dir: &TempDir, port: u16, control: &str) -> (PathBuf, String) {
    let id = keygen(&dir.path("node.key"));
    let config = dir.path("plain.toml");
    std::fs::write(
        &config,
        format!(
            "key_file = \"node.key\"\n\
             [underlay]\nlisten = \"0.0.0.0:{port}\"\n\
             [dataplane]\nworkers = 1\nbuffer_count = 64\n\
             [admin]\nsocket = \"{}\"\n\
             [control]\n{control}\n",
            dir.path("admin.sock").display()
        ),
    )
    .expect("write config");
    (config, id)
}

#[test]
fn named_seeds_resolve_and_peers_are_logged_by_name() {
    let ns = TestNetns::new("cli-log");
    let dir_b = TempDir::new("log-b");
    let (config_b, id_b) = plain_router(&dir_b, 4800, "");
    let short_b = &id_b[..16];
    let mut b = start_in(&ns, "b", &[], &config_b, dir_b.path("b.log"));
    b.wait_for(" up: ", TIMEOUT);

    // A seed by host name (resolved through /etc/hosts), and one that
    // cannot resolve: the namespace has no route to any name server, so
    // nothing leaves it.
    let dir_a = TempDir::new("log-a");
    let (config_a, _) = plain_router(
        &dir_a,
        4799,
        "seeds = [\"localhost:4800\", \"nonexistent-seed.invalid:4799\"]",
    );
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.name])
        .args([XORLAY, "run", "--config", config_a.to_str().expect("utf-8")])
        .env("RUST_LOG", "debug");
    let mut a = Daemon::spawn("a", command, dir_a.path("a.log"));
    a.wait_for("seed localhost:4800 resolves to 127.0.0.1:4800", TIMEOUT);
    a.wait_for("cannot resolve seed nonexistent-seed.invalid:4799", TIMEOUT);
    a.wait_for(&format!("peer up: {short_b} at 127.0.0.1:4800"), TIMEOUT);
    a.wait_for(&format!("next hops + {short_b} at 127.0.0.1:4800"), TIMEOUT);
    // Debug shows lookups and route decisions.
    a.wait_for("lookup ", TIMEOUT);

    b.signal(libc::SIGTERM);
    let status = b.wait_exit(TIMEOUT);
    assert!(status.success(), "{status}\n{}", b.log());
    a.wait_for(&format!("peer down: {short_b} at 127.0.0.1:4800"), TIMEOUT);
    a.wait_for(
        &format!("dial of {short_b} at 127.0.0.1:4800 failed: no answer to the handshake"),
        TIMEOUT,
    );
    assert!(a.exited().is_none(), "a died:\n{}", a.log());
    a.signal(libc::SIGTERM);
    let status = a.wait_exit(TIMEOUT);
    assert!(status.success(), "{status}\n{}", a.log());

    let log = a.log();
    // The failing name is warned about once (rate-limited), not per round.
    assert_eq!(
        log.matches("cannot resolve seed nonexistent-seed.invalid")
            .count(),
        1,
        "{log}"
    );
    // A topology line only for a change: never the same line twice in a row.
    let topology: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("topology: ").map(|(_, rest)| rest))
        .collect();
    assert!(!topology.is_empty(), "{log}");
    for pair in topology.windows(2) {
        assert_ne!(pair[0], pair[1], "a topology line without a change:\n{log}");
    }
}
