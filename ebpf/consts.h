/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Counter indices of the XDP program's per-CPU stats array (map
 * `xorlay_stats`). Parsed by router/build.rs into Rust constants, like
 * wire.h. Each packet the program sees increments exactly one counter.
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
/* Number of counters. */
#define XORLAY_XDP_STAT_COUNT 8

#endif /* XORLAY_CONSTS_H */
