//! The lab removes everything it made: when a router fails to start, and
//! when the operator presses Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xorlay_bench::lab::{Lab, LabOptions};
use xorlay_bench::{netns, wait_until};

#[test]
fn failed_router_start_removes_the_lab() {
    let mut lab = Lab::new(LabOptions {
        routers: 1,
        xdp_mode: "bogus".into(),
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    let names: Vec<String> = lab.nodes.iter().map(|n| n.netns.clone()).collect();
    let dir = lab.dir.clone();
    for name in &names {
        assert!(
            netns::list().contains(name),
            "{name} exists while the lab runs"
        );
    }
    let err = lab
        .start_routers()
        .expect_err("xdp_mode = bogus is refused");
    assert!(
        format!("{err:#}").contains("xdp_mode"),
        "the router's error is shown: {err:#}"
    );
    drop(lab);
    let listed = netns::list();
    for name in &names {
        assert!(!listed.contains(name), "{name} left behind");
    }
    assert!(
        !dir.exists(),
        "scratch folder {} left behind",
        dir.display()
    );
}

#[test]
fn ctrl_c_removes_the_lab() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xorlay-bench"))
        .args(["lab", "--routers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start xorlay-bench lab");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Collect namespace names until the lab says it is running (bounded).
    let mut names = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut running = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines_rx.recv_timeout(left) {
            Ok(line) if line.starts_with("lab running") => {
                running = true;
                break;
            }
            Ok(line) => {
                if let Some(ns) = line.split_whitespace().skip_while(|w| *w != "ns").nth(1) {
                    names.push(ns.to_string());
                }
            }
            Err(_) => break,
        }
    }
    if !running {
        let _ = child.kill();
        let _ = child.wait();
        let _ = Command::new(env!("CARGO_BIN_EXE_xorlay-bench"))
            .arg("clean")
            .status();
        panic!("the lab did not report running within 30 s");
    }
    assert_eq!(names.len(), 4, "gen, r1, r2, sink: {names:?}");
    let listed = netns::list();
    for name in &names {
        assert!(listed.contains(name), "{name} exists while the lab runs");
    }
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let exited = wait_until(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the lab");
    assert!(exited, "the lab did not exit within 20 s of Ctrl-C");
    assert!(
        status.success(),
        "the lab exited with {status} after Ctrl-C"
    );
    // The node namespaces and anything else of this lab (its switch).
    let tag = names[0].trim_end_matches("-gen").to_string();
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&tag))
        .collect();
    assert!(left.is_empty(), "left behind after Ctrl-C: {left:?}");
}
