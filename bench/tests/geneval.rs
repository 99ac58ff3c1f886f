//! The generator candidates of `xorlay-bench gen-eval` (root): each runs
//! briefly on a fresh veth pair into the XDP sink, which must count some of
//! its frames and never more than it sent; the pair is gone afterwards.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay_bench::geneval::{self, Candidate, EvalOptions};
use xorlay_bench::netns;

#[test]
fn every_candidate_reaches_the_sink() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = EvalOptions {
        candidates: Candidate::all(),
        duration: Duration::from_millis(300),
        runs: 1,
        gen_cpu: Some(0),
        sink_cpu: (cpus >= 2).then_some(1),
    };
    let results = geneval::evaluate(&options, &Arc::new(AtomicBool::new(false)))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(results.len(), Candidate::all().len());
    for (candidate, runs) in &results {
        let name = candidate.name();
        assert_eq!(runs.len(), 1, "{name}");
        let run = &runs[0];
        eprintln!("{name}: {run:?}");
        assert!(run.received > 0, "{name}: the sink counted nothing");
        assert!(
            run.received <= run.generator.sent,
            "{name}: the sink counted {} of {} sent",
            run.received,
            run.generator.sent
        );
        assert!(run.unique <= run.received, "{name}");
        if *candidate == Candidate::TcClone {
            // Plain clones carry their seed's sequence number.
            assert!(run.duplicates > 0, "{name}: clones counted as unique");
        } else {
            assert_eq!(run.duplicates, 0, "{name}: duplicates");
        }
    }
    let pid = std::process::id().to_string();
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|ns| ns.starts_with(&format!("xl{pid}xev")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
