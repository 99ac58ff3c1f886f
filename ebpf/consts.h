/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Constants of the XDP program shared with userspace: the counter indices of
 * its per-CPU stats array (map `xorlay_stats`) and the size and key layout
 * of its neighbor allowlist (map `xorlay_neighbors`, maps.h). Parsed by
 * router/build.rs into Rust constants, like wire.h. Each packet the program
 * sees increments exactly one counter.
 * Keep every #define on one line in the form `#define NAME <integer>`.
 */
#ifndef XORLAY_CONSTS_H
#define XORLAY_CONSTS_H

/* Passed to the stack untouched: not UDP to the overlay port (or not parseable as such). */
#define XORLAY_XDP_PASS_OTHER 0
/* Passed to the stack: a well-formed overlay packet, for the io_uring workers. */
#define XORLAY_XDP_PASS_OVERLAY 1
/* Dropped: UDP payload shorter than the overlay header. */
#define XORLAY_XDP_DROP_TRUNCATED 2
/* Dropped: magic is not XORLAY_MAGIC. */
#define XORLAY_XDP_DROP_BAD_MAGIC 3
/* Dropped: version is not XORLAY_VERSION. */
#define XORLAY_XDP_DROP_BAD_VERSION 4
/* Dropped: type is not a known XORLAY_TYPE_*. */
#define XORLAY_XDP_DROP_BAD_TYPE 5
/* Dropped: payload_len disagrees with the UDP length. */
#define XORLAY_XDP_DROP_BAD_LENGTH 6
/* Dropped: hop limit 0 on arrival. */
#define XORLAY_XDP_DROP_HOP_LIMIT_ZERO 7
/* Dropped: a data packet whose source (IP, UDP port) is not in xorlay_neighbors. */
#define XORLAY_XDP_DROP_NOT_NEIGHBOR 8
/* Number of counters. */
#define XORLAY_XDP_STAT_COUNT 9

/* Capacity of the neighbor allowlist (map xorlay_neighbors). */
#define XORLAY_NEIGHBORS_MAX 4096
/* struct xorlay_neighbor_key (maps.h): its size and the offsets of its fields. */
#define XORLAY_NEIGHBOR_KEY_LEN 20
#define XORLAY_NEIGHBOR_KEY_OFF_ADDR 0
#define XORLAY_NEIGHBOR_KEY_OFF_PORT 16
#define XORLAY_NEIGHBOR_KEY_OFF_PAD 18

#endif /* XORLAY_CONSTS_H */
