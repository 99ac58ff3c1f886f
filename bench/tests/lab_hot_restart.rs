//! Hot restart under traffic, end to end: gen -> r1 -> sink with native XDP
//! on r1 and its state pinned (`[xdp] pin_dir`). While the generator (the
//! benchmark's own overlay endpoint, an authenticated neighbor of r1) sends
//! a paced stream whose destination is cached in r1's XDP route cache, a
//! second `xorlay run` with the same config starts, takes over the pinned
//! XDP state, and the first instance hands over and exits by itself. Every
//! packet sent must reach the sink exactly once: zero loss on cached routes.
//!
//! The bpf filesystem is mounted for this test alone under /tmp and
//! unmounted by a guard (also on panic); the lab removes its namespaces.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::counter;
use xorlay_bench::endpoint::start_endpoints;
use xorlay_bench::lab::{Lab, LabOptions, Topology};
use xorlay_bench::loadgen::{GenSpec, payload_for_frame};

/// Packets per second of the stream.
const RATE: u64 = 20_000;
/// Length of the stream; the restart happens inside it.
const STREAM: Duration = Duration::from_secs(4);

/// A bpffs mounted for the test; unmounted on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount() -> Bpffs {
        let dir = std::env::temp_dir().join(format!("xl-lab-hr-{}-bpf", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mounted = Bpffs(dir);
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&mounted.0)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "mount bpffs: {status:?}"
        );
        mounted
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn fast_path_forwards(lab: &Lab) -> u64 {
    let stats = lab
        .stats(1)
        .unwrap_or_else(|e| panic!("r1 stats: {e:#}\n{}", lab.log_tail(1)));
    counter(&stats, "/xdp/fwd_tx") + counter(&stats, "/xdp/fwd_redirect")
}

#[test]
fn hot_restart_under_traffic_loses_no_cached_packet() {
    let bpffs = Bpffs::mount();
    let pin_dir = bpffs.0.join("r1");
    let mut lab = Lab::new(LabOptions {
        topology: Topology::Chain,
        routers: 1,
        relay_config: format!("[xdp]\npin_dir = {:?}\n", pin_dir.display().to_string()),
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("building the lab: {e:#}"));
    lab.start_relays()
        .unwrap_or_else(|e| panic!("starting r1: {e:#}"));
    let (generator, sink) =
        start_endpoints(&lab, None).unwrap_or_else(|e| panic!("endpoints: {e:#}"));
    let (payload_len, _) = payload_for_frame(256);
    let spec = |trial, rate_pps, duration| GenSpec {
        src: generator.id(),
        dst: sink.id(),
        payload_len,
        rate_pps,
        duration,
        trial,
    };
    let stop = Arc::new(AtomicBool::new(false));

    // Warm-up: the first packets miss, go through r1's workers, and install
    // the sink's route into r1's XDP cache; from then on XDP forwards.
    sink.begin_trial(1, 10_000).expect("trial 1");
    let warm = generator
        .generate(
            lab.nodes[1].addr_on(0).expect("r1 address"),
            spec(1, 2_000, Duration::from_millis(500)),
            None,
            stop.clone(),
        )
        .unwrap_or_else(|e| panic!("warm-up: {e:#}"));
    assert!(
        xorlay_bench::wait_until(Duration::from_secs(5), || sink.valid() >= warm.sent),
        "warm-up: {} of {} arrived\n{}",
        sink.valid(),
        warm.sent,
        lab.log_tail(1)
    );
    let cached_before = fast_path_forwards(&lab);
    assert!(
        cached_before > 0,
        "the sink's route is not in r1's XDP cache after the warm-up\n{}",
        lab.log_tail(1)
    );
    let _ = sink.end_trial();

    // The stream, with the hot restart in its middle.
    sink.begin_trial(2, RATE * STREAM.as_secs() * 2)
        .expect("trial 2");
    let r1_addr = lab.nodes[1].addr_on(0).expect("r1 address");
    let (report, old_status) = std::thread::scope(|scope| {
        let sender =
            scope.spawn(|| generator.generate(r1_addr, spec(2, RATE, STREAM), None, stop.clone()));
        // A quarter of the stream has passed before the restart.
        let started = std::time::Instant::now();
        assert!(
            xorlay_bench::wait_until(Duration::from_secs(5), || sink.valid() >= RATE),
            "the stream did not start: {} arrived",
            sink.valid()
        );
        let old_status = lab.hot_restart(1);
        let restart_took = started.elapsed();
        let report = sender.join().expect("generator thread");
        assert!(
            restart_took < STREAM,
            "the restart took {restart_took:?}, longer than the stream ({STREAM:?}): it was not under traffic"
        );
        (report, old_status)
    });
    let old_status = old_status.unwrap_or_else(|e| panic!("hot restart: {e:#}"));
    let report = report.unwrap_or_else(|e| panic!("generator: {e:#}"));
    assert!(
        old_status.success(),
        "the first instance exited with {old_status}\n{}",
        lab.log_tail(1)
    );
    assert!(report.sent > RATE, "generator sent only {report:?}");
    xorlay_bench::wait_until(Duration::from_secs(5), || sink.valid() >= report.sent);
    let result = sink.end_trial().expect("trial 2 counted");
    let log = std::fs::read_to_string(lab.log_path(1)).unwrap_or_default();
    assert!(
        log.contains("hot restart: taking over XDP from pid"),
        "the second instance did not take over:\n{}",
        lab.log_tail(1)
    );
    assert!(
        log.contains("handing over to the newer instance"),
        "the first instance did not hand over:\n{}",
        lab.log_tail(1)
    );
    assert_eq!(
        result.unique,
        report.sent,
        "packets lost across the hot restart: sent {}, delivered {} ({} duplicates)\n{}",
        report.sent,
        result.unique,
        result.duplicates,
        lab.log_tail(1)
    );
    assert_eq!(result.duplicates, 0);
    // The new instance serves the admin socket and its XDP still forwards.
    let cached_after = fast_path_forwards(&lab);
    assert!(
        cached_after > cached_before,
        "r1's fast path did not forward during the stream ({cached_before} -> {cached_after})"
    );
    drop(generator);
    drop(sink);
    drop(lab);
    assert!(
        !pin_dir.exists(),
        "the new instance left its pins at exit: {}",
        pin_dir.display()
    );
}
