/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Constants of the XDP program shared with userspace: the counter indices of
 * its per-CPU stats array (map `xorlay_stats`), the capacities of its maps,
 * the sizes of the structs of pinned maps (maps.h; the layouts themselves
 * are the struct declarations there, which build.rs turns into Rust) and
 * the flags of their values. Parsed by
 * router/build.rs into typed Rust constants, like wire.h. Each packet the
 * program sees increments exactly one counter.
 * Keep every #define on one line in the form `#define NAME <integer>`.
 * The XORLAY_XDP_* counters are numbered 0, 1, 2, ... in file order, each
 * with its comment on the line above: build.rs makes the Rust counter list
 * (XdpStat, XdpCounters, the names `xorlay stats` prints) from them, so a
 * new counter needs no Rust change beyond what reads it.
 */
#ifndef XORLAY_CONSTS_H
#define XORLAY_CONSTS_H

/* Passed to the stack untouched: not UDP to the overlay port (or not parseable as such). */
#define XORLAY_XDP_PASS_OTHER 0
/* Passed to the stack: a well-formed overlay packet, for the io_uring workers. */
#define XORLAY_XDP_PASS_OVERLAY 1
/* Dropped: UDP payload shorter than the overlay header (the whole header with flag VIA), or a UDP length beyond the frame. */
#define XORLAY_XDP_DROP_TRUNCATED 2
/* Dropped: magic is not XORLAY_MAGIC. */
#define XORLAY_XDP_DROP_BAD_MAGIC 3
/* Dropped: version is not XORLAY_VERSION. */
#define XORLAY_XDP_DROP_BAD_VERSION 4
/* Dropped: type is not a known XORLAY_TYPE_*. */
#define XORLAY_XDP_DROP_BAD_TYPE 5
/* Dropped: payload_len disagrees with the UDP length minus the whole header. */
#define XORLAY_XDP_DROP_BAD_LENGTH 6
/* Dropped: hop limit 0 on arrival. */
#define XORLAY_XDP_DROP_HOP_LIMIT_ZERO 7
/* Dropped: a data packet whose source IP address is not in xorlay_neighbors. */
#define XORLAY_XDP_DROP_NOT_NEIGHBOR 8
/* Dropped: a HANDSHAKE_1 from a source IP over its own token bucket. */
#define XORLAY_XDP_DROP_HANDSHAKE_SOURCE_RATE 9
/* Dropped: a HANDSHAKE_1 over the global handshake token bucket. */
#define XORLAY_XDP_DROP_HANDSHAKE_GLOBAL_RATE 10
/* Dropped: a data packet from a neighbor over that neighbor's token bucket. */
#define XORLAY_XDP_DROP_NEIGHBOR_RATE 11
/* Dropped: a data packet without a via (flag VIA clear) whose destination has a valid negative entry in xorlay_routes. */
#define XORLAY_XDP_DROP_NO_ROUTE 12
/* Dropped: a valid xorlay_routes entry, but hop limit 1 (forwarding would reach 0). */
#define XORLAY_XDP_DROP_HOP_LIMIT_EXCEEDED 13
/* Passed to the workers: data for another node without a valid xorlay_routes entry, or with a valid negative one and a via (flag VIA set), which the workers may route by. */
#define XORLAY_XDP_PASS_CACHE_MISS 14
/* Passed to the workers, untouched: a valid entry the fast path cannot finish (no FIB route or neighbor entry, MTU, VLAN tag, IPv4 options or bad header checksum, UDP checksum 0 over IPv6, a UDP checksum that neither verifies nor is a partial one to complete (docs/xdp.md), egress not in xorlay_tx_ports). */
#define XORLAY_XDP_PASS_UNRESOLVED 15
/* Forwarded by the fast path with XDP_TX (egress = ingress interface). */
#define XORLAY_XDP_FWD_TX 16
/* Forwarded by the fast path with XDP_REDIRECT through xorlay_tx_ports. */
#define XORLAY_XDP_FWD_REDIRECT 17
/* Dropped: a data packet for the workers shed before the kernel allocates anything: its worker already has its window of packets queued (map xorlay_backlog, credits the worker returns as it reads), or it is over the shedding budget (map xorlay_shed, set by the router while its workers' sockets overflow). */
#define XORLAY_XDP_DROP_SHED 18
/* Number of counters. */
#define XORLAY_XDP_STAT_COUNT 19

/* The router's limit on io_uring workers: the workers xorlay_backlog holds
 * credits for, the sockets the steering program (steer.bpf.c) chooses from,
 * and `dataplane.workers` at most (router/src/config.rs). */
#define XORLAY_WORKERS_MAX 64

/* Capacity of the neighbor allowlist (map xorlay_neighbors). */
#define XORLAY_NEIGHBORS_MAX 4096
/* Size of struct xorlay_neighbor_key (maps.h), the key of a pinned map. */
#define XORLAY_NEIGHBOR_KEY_LEN 20

/* Capacity of the per-source handshake buckets (LRU map xorlay_handshake_sources). */
#define XORLAY_HANDSHAKE_SOURCES_MAX 16384
/* Session message kind of a Noise initiation (router/src/wire/session.rs, Kind::Handshake1). */
#define XORLAY_SESSION_KIND_HANDSHAKE_1 1

/* Capacity of the route cache (LRU map xorlay_routes). */
#define XORLAY_ROUTES_MAX 32768
/* Capacity of the egress device map (xorlay_tx_ports). */
#define XORLAY_TX_PORTS_MAX 64
/* Size of struct xorlay_route (maps.h), the value of a pinned map. */
#define XORLAY_ROUTE_LEN 104
/* How long the fast path reuses a next hop's FIB/neighbor resolution (ns). */
#define XORLAY_L2_TTL_NS 100000000
/* xorlay_route.flags: no route to this destination (drop in XDP). */
#define XORLAY_ROUTE_F_NEGATIVE 1
/* xorlay_route.flags: the entry was made by a packet's via (the destination
 * has no route of its own here); it applies only to packets whose via
 * starts with xorlay_route.via_tag, the others are misses. */
#define XORLAY_ROUTE_F_VIA 2
/* Length of xorlay_route.via_tag: the first bytes of the via an entry was made for. */
#define XORLAY_ROUTE_VIA_TAG_LEN 8

/* Size of struct xorlay_config (maps.h), the value of a pinned map. */
#define XORLAY_CONFIG_LEN 80
/* xorlay_config.flags: local_id is set; the route cache is consulted only then. */
#define XORLAY_CONFIG_F_LOCAL_ID 1

/* TTL (IPv4) / hop limit (IPv6) of a datagram the fast path sends: a fresh datagram, like the workers' socket sends (Linux default). */
#define XORLAY_UNDERLAY_TTL 64

#endif /* XORLAY_CONSTS_H */
