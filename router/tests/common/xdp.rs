//! Running the loaded XDP program on a frame (BPF_PROG_TEST_RUN), and
//! second handles on its maps: to check them from outside, and to age their
//! entries by writing older timestamps instead of sleeping.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{HashMap, Map, MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use xorlay::core::NodeId;
use xorlay::io::bpf::{self, NeighborKey, abi};

/// Runs the program of `ebpf` once on `frame` arriving on interface
/// `ingress` (0: none); returns the action and the output frame.
///
/// BPF_PROG_TEST_RUN refuses inputs shorter than an Ethernet header, so a
/// runt frame is padded with zeros to 14 bytes and `xdp_md.data_end` (given
/// as the context) ends the frame's linear data after its real length: the
/// program sees exactly `frame` between `data` and `data_end`, the padding
/// lands in a fragment it cannot read, and the output is the padded input
/// (asserted), returned without the padding.
pub fn test_run(ebpf: &Ebpf, description: &str, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
    const ETH_HLEN: usize = 14;
    let runt = frame.len() < ETH_HLEN;
    let mut input = frame.to_vec();
    if runt {
        input.resize(ETH_HLEN, 0);
    }
    let data_end = u32::try_from(frame.len()).expect("frame fits u32");
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex (offsets from the start of data_in).
    let ctx: Vec<u8> = [0, data_end, 0, ingress, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect();
    let mut output = vec![0u8; input.len() + 256];
    let program: &Xdp = match ebpf.program(bpf::PROGRAM_NAME) {
        Some(program) => match program.try_into() {
            Ok(xdp) => xdp,
            Err(e) => panic!("{} is not an XDP program: {e}", bpf::PROGRAM_NAME),
        },
        None => panic!("no program {} in the object", bpf::PROGRAM_NAME),
    };
    let options = TestRunOptions {
        data_in: Some(&input),
        data_out: Some(&mut output),
        ctx_in: (runt || ingress != 0).then_some(&ctx[..]),
        ..TestRunOptions::default()
    };
    let result = match program.test_run(options) {
        Ok(result) => result,
        Err(e) => panic!("{description}: BPF_PROG_TEST_RUN failed: {e:?}"),
    };
    output.truncate(result.data_size_out as usize);
    if runt {
        assert_eq!(
            output.get(frame.len()..),
            input.get(frame.len()..),
            "{description}: the padding of a runt frame changed"
        );
        output.truncate(frame.len().min(output.len()));
    }
    (result.return_value, output)
}

/// A second handle on map `name` of `ebpf`, opened by its ID (call it
/// before the map is taken out of `ebpf`), its info checked by `check`.
pub fn reopen(ebpf: &Ebpf, name: &str, check: impl FnOnce(&aya::maps::MapInfo)) -> Map {
    let map = ebpf
        .map(name)
        .unwrap_or_else(|| panic!("no map {name} in the object (taken already?)"));
    let data = match map {
        Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuHashMap(data)
        | Map::Array(data) => data,
        other => panic!("map {name} has an unexpected type: {other:?}"),
    };
    let info = data
        .info()
        .unwrap_or_else(|e| panic!("map {name} info: {e}"));
    check(&info);
    let id = info.id();
    let data = MapData::from_id(id).unwrap_or_else(|e| panic!("opening map {name} ({id}): {e}"));
    Map::from_map_data(data).unwrap_or_else(|e| panic!("map {name} ({id}): {e}"))
}

/// A second handle on the route cache (`xorlay_routes`), with the value
/// struct generated from `ebpf/maps.h`.
pub struct RawRoutes {
    map: HashMap<MapData, abi::RouteKey, abi::Route>,
}

impl RawRoutes {
    /// Opens the route cache of `ebpf` (before it is taken) a second time.
    pub fn open(ebpf: &Ebpf) -> RawRoutes {
        let map = reopen(ebpf, bpf::ROUTES_MAP_NAME, |info| {
            assert_eq!(info.key_size() as usize, size_of::<abi::RouteKey>());
            assert_eq!(info.value_size() as usize, size_of::<abi::Route>());
        });
        match HashMap::try_from(map) {
            Ok(map) => RawRoutes { map },
            Err(e) => panic!("{} as a hash map: {e}", bpf::ROUTES_MAP_NAME),
        }
    }

    /// Makes the entry for `dst` look `by` older: its install time, its
    /// last use and its next hop's resolution time (if resolved) move `by`
    /// into the past, as if that long had passed without traffic. Panics if
    /// there is no entry.
    pub fn backdate(&mut self, dst: &NodeId, by: Duration) {
        let by_ns = u64::try_from(by.as_nanos()).expect("a test's duration fits u64 ns");
        let key = abi::RouteKey {
            id: *dst.as_bytes(),
        };
        let mut value = self
            .map
            .get(&key, 0)
            .unwrap_or_else(|e| panic!("no route cache entry for {dst} to backdate: {e}"));
        for (field, keep_zero) in [
            (&mut value.installed_ns, false),
            (&mut value.last_used_ns, false),
            // 0 there means "never resolved"; it stays that.
            (&mut value.l2_checked_ns, true),
        ] {
            let ns = *field;
            if keep_zero && ns == 0 {
                continue;
            }
            assert!(
                ns > by_ns,
                "backdating {dst} by {by:?}: the timestamp {ns} ns is younger than that"
            );
            *field = ns - by_ns;
        }
        self.map
            .insert(key, value, 0)
            .unwrap_or_else(|e| panic!("rewriting the route cache entry for {dst}: {e}"));
    }
}

/// A second handle on the neighbor allowlist (`xorlay_neighbors`), whose
/// values are the neighbors' per-CPU data buckets (GCRA: the theoretical
/// arrival time of the next packet, 0 = a full bucket): to check
/// `NeighborMap::sync` against the kernel map, to change the map behind its
/// back (as a previous run would have left it), and to age buckets.
pub struct RawNeighbors {
    /// The map itself.
    pub map: PerCpuHashMap<MapData, NeighborKey, u64>,
}

impl RawNeighbors {
    /// Opens the allowlist of `ebpf` (before it is taken) a second time.
    pub fn open(ebpf: &Ebpf) -> RawNeighbors {
        let map = reopen(ebpf, bpf::NEIGHBORS_MAP_NAME, |info| {
            assert_eq!(info.max_entries() as usize, bpf::NEIGHBORS_MAX);
            assert_eq!(info.key_size() as usize, size_of::<NeighborKey>());
            assert_eq!(info.value_size(), 8);
        });
        match PerCpuHashMap::try_from(map) {
            Ok(map) => RawNeighbors { map },
            Err(e) => panic!("{} as a per-CPU hash map: {e}", bpf::NEIGHBORS_MAP_NAME),
        }
    }

    /// Every entry, read by iterating the kernel map.
    pub fn entries(&self) -> Vec<(NeighborKey, Vec<u64>)> {
        self.map
            .iter()
            .map(|entry| match entry {
                Ok((key, values)) => (key, values.iter().copied().collect()),
                Err(e) => panic!("iterating the map: {e}"),
            })
            .collect()
    }

    /// The map's keys as canonical socket addresses; asserts every bucket
    /// is zeroed (full: no traffic here) and no key repeats.
    pub fn addrs(&self) -> HashSet<SocketAddr> {
        let entries = self.entries();
        assert!(
            entries
                .iter()
                .all(|(_, buckets)| buckets.iter().all(|&tat| tat == 0)),
            "{entries:?}"
        );
        let addrs: HashSet<SocketAddr> = entries.iter().map(|(k, _)| k.socket_addr()).collect();
        assert_eq!(addrs.len(), entries.len(), "{entries:?}");
        addrs
    }

    /// Moves `key`'s data bucket on every CPU `by` into the past, as if that
    /// long had passed without its traffic: the tokens that refill in `by`
    /// come back. Panics if there is no entry or no CPU has used it.
    pub fn backdate_bucket(&mut self, key: &NeighborKey, by: Duration) {
        let by_ns = u64::try_from(by.as_nanos()).expect("a test's duration fits u64 ns");
        let buckets = self
            .map
            .get(key, 0)
            .unwrap_or_else(|e| panic!("no allowlist entry {key:?} to backdate: {e}"));
        let tats: Vec<u64> = buckets.iter().copied().collect();
        assert!(
            tats.iter().any(|&tat| tat != 0),
            "{key:?}: no CPU has used its bucket yet"
        );
        // A full bucket (0) stays full.
        let moved: Vec<u64> = tats.iter().map(|&tat| tat.saturating_sub(by_ns)).collect();
        let values = PerCpuValues::try_from(moved)
            .unwrap_or_else(|e| panic!("per-CPU values for {key:?}: {e}"));
        self.map
            .insert(key, values, 0)
            .unwrap_or_else(|e| panic!("rewriting the bucket of {key:?}: {e}"));
    }
}
