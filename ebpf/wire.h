/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xorlay wire format v2: the canonical definition.
 *
 * Every XORLAY_* #define in this file is parsed by router/build.rs and
 * becomes a Rust constant (router/src/wire/consts.rs includes them); the Rust
 * views assert their field ranges against these values at compile time, and
 * the _Static_asserts below pin the C struct to the same numbers. Change a
 * value here and both sides follow or fail to build.
 *
 * Keep every #define on one line in the form `#define NAME <integer>`.
 * docs/wire-format.md documents each field.
 */
#ifndef XORLAY_WIRE_H
#define XORLAY_WIRE_H

#include <linux/types.h>

/*
 * Overlay header, carried as the first bytes of a UDP payload: a fixed part
 * of XORLAY_HDR_LEN bytes (struct xorlay_hdr), then, when XORLAY_FLAG_VIA is
 * set, the 32-byte "via" node ID (XORLAY_HDR_VIA_LEN bytes in all). Version
 * 1 (no via field) is refused like any other unknown version.
 */
#define XORLAY_MAGIC 0x584f /* "XO" */
#define XORLAY_VERSION 2
#define XORLAY_NODE_ID_LEN 32
/* The fixed part of the header: what every packet carries. */
#define XORLAY_HDR_LEN 72
/* The whole header of a packet with XORLAY_FLAG_VIA set. */
#define XORLAY_HDR_VIA_LEN 104

/* Byte offsets inside the overlay header. */
#define XORLAY_OFF_MAGIC 0
#define XORLAY_OFF_VERSION 2
#define XORLAY_OFF_TYPE 3
#define XORLAY_OFF_HOP_LIMIT 4
#define XORLAY_OFF_FLAGS 5
#define XORLAY_OFF_PAYLOAD_LEN 6
#define XORLAY_OFF_DST 8
#define XORLAY_OFF_SRC 40
/* Only with XORLAY_FLAG_VIA: the via node ID follows src. */
#define XORLAY_OFF_VIA 72

/*
 * Bits of the flags byte. XORLAY_FLAG_VIA: a via node ID follows src (the
 * destination's nearest beacon: a router without a route to dst forwards
 * toward via). Every other bit is reserved: senders write 0, receivers
 * ignore it, relays pass it on unchanged.
 */
#define XORLAY_FLAG_VIA 0x01

/* Packet types. */
#define XORLAY_TYPE_DATA 1
#define XORLAY_TYPE_CONTROL 2

/* Default UDP port of the overlay (configurable per router). */
#define XORLAY_DEFAULT_PORT 4799
/* Hop limit a sender puts into a new packet. */
#define XORLAY_DEFAULT_HOP_LIMIT 64

/*
 * The outer UDP source port of a data packet the XDP fast path forwards: a
 * hash of the packet's two node IDs in the dynamic range 49152..65535 (as
 * VXLAN, RFC 7348), so that RSS and ECMP spread overlay flows while each
 * flow keeps its path. xorlay_flow_port() below; docs/wire-format.md.
 */
#define XORLAY_FLOW_PORT_BASE 49152
#define XORLAY_FLOW_PORT_MASK 16383

struct xorlay_hdr {
	__u8 magic[2];     /* XORLAY_MAGIC, big endian */
	__u8 version;      /* XORLAY_VERSION */
	__u8 type;         /* XORLAY_TYPE_* */
	__u8 hop_limit;    /* decremented by every router; never 0 on the wire */
	__u8 flags;        /* XORLAY_FLAG_VIA; other bits reserved (0 on send, ignored, passed on) */
	__be16 payload_len; /* bytes after the whole header (72 or 104); the rest of the UDP payload */
	__u8 dst[XORLAY_NODE_ID_LEN];
	__u8 src[XORLAY_NODE_ID_LEN];
};

_Static_assert(sizeof(struct xorlay_hdr) == XORLAY_HDR_LEN, "header length");
_Static_assert(__builtin_offsetof(struct xorlay_hdr, version) == XORLAY_OFF_VERSION, "version");
_Static_assert(__builtin_offsetof(struct xorlay_hdr, type) == XORLAY_OFF_TYPE, "type");
_Static_assert(__builtin_offsetof(struct xorlay_hdr, hop_limit) == XORLAY_OFF_HOP_LIMIT, "hop_limit");
_Static_assert(__builtin_offsetof(struct xorlay_hdr, flags) == XORLAY_OFF_FLAGS, "flags");
_Static_assert(__builtin_offsetof(struct xorlay_hdr, payload_len) == XORLAY_OFF_PAYLOAD_LEN, "payload_len");
_Static_assert(__builtin_offsetof(struct xorlay_hdr, dst) == XORLAY_OFF_DST, "dst");
_Static_assert(__builtin_offsetof(struct xorlay_hdr, src) == XORLAY_OFF_SRC, "src");

/* The header of a packet with XORLAY_FLAG_VIA set. */
struct xorlay_hdr_via {
	struct xorlay_hdr hdr;
	__u8 via[XORLAY_NODE_ID_LEN];
};

_Static_assert(sizeof(struct xorlay_hdr_via) == XORLAY_HDR_VIA_LEN, "header length with via");
_Static_assert(__builtin_offsetof(struct xorlay_hdr_via, via) == XORLAY_OFF_VIA, "via");

/*
 * The length of the whole header of `hdr`: XORLAY_HDR_VIA_LEN with
 * XORLAY_FLAG_VIA set, else XORLAY_HDR_LEN. The caller checks that many
 * bytes are there before it reads past the fixed part.
 */
static __always_inline __u32 xorlay_hdr_len(const struct xorlay_hdr *hdr)
{
	return (hdr->flags & XORLAY_FLAG_VIA) ? XORLAY_HDR_VIA_LEN : XORLAY_HDR_LEN;
}

/*
 * The flow port of a header: the first four bytes of dst XOR those of src
 * (big endian; node IDs are hashes, so these bits are uniform), folded to
 * 14 bits. The same for both directions of a flow and on every hop.
 * router/src/wire/overlay.rs, Packet::flow_port, is the Rust twin; a test
 * runs both on the same packets.
 */
static __always_inline __u16 xorlay_flow_port(const struct xorlay_hdr *hdr)
{
	__u32 w = ((__u32)(hdr->dst[0] ^ hdr->src[0]) << 24) |
		  ((__u32)(hdr->dst[1] ^ hdr->src[1]) << 16) |
		  ((__u32)(hdr->dst[2] ^ hdr->src[2]) << 8) | (__u32)(hdr->dst[3] ^ hdr->src[3]);

	return XORLAY_FLOW_PORT_BASE | ((w ^ (w >> 14) ^ (w >> 28)) & XORLAY_FLOW_PORT_MASK);
}

/*
 * The worker (of `workers`) a data packet belongs to, from the first 8 bytes
 * of its destination and source IDs (dst8, src8: loaded as one native-endian
 * u64 each). Node IDs are hashes already: mixing their first bytes is
 * enough. The steering program (steer.bpf.c) picks the worker socket with
 * it; the XDP program looks up that worker's backlog with it, so both agree
 * on which worker a packet will reach.
 */
static __always_inline __u32 xorlay_worker_of(__u64 dst8, __u64 src8, __u32 workers)
{
	__u64 h = dst8 ^ (src8 * 0x9e3779b97f4a7c15ULL);

	h ^= h >> 32;
	return (__u32)h % workers;
}

#endif /* XORLAY_WIRE_H */
