//! The `xorlay` command as an operator meets it: key generation, config
//! checks, and the one-line errors for every mistake `run` can meet. Cases
//! that reach XDP run inside a namespace of their own.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestNetns;

const XORLAY: &str = env!("CARGO_BIN_EXE_xorlay");

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
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
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
    let out = xorlay(&["check", "--config", config.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
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
    let ok = xorlay(&["check", "--config", config.to_str().expect("utf-8")]);
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
    assert_one_line_error(
        &xorlay(&["check", "--config", config.to_str().expect("utf-8")]),
        "--difficulty 8",
    );
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
