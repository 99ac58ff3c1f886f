/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Internet checksum helpers of the XDP program (RFC 1071, RFC 1624). All
 * values are raw: checksums and the words they cover stay in network byte
 * order as they sit in the packet; the one's complement sum does not care.
 */
#ifndef XORLAY_CSUM_H
#define XORLAY_CSUM_H

#include <linux/types.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

/* Folds a 32-bit one's complement sum to 16 bits and complements it. */
static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/*
 * The IPv4 header checksum of a 20-byte header (no options), over the
 * header as it is, checksum field included: 0 if the stored checksum is
 * right; with the field zeroed, the value to store.
 */
static __always_inline __u16 ipv4_csum20(const struct iphdr *ip)
{
	const __u16 *words = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += words[i];
	return csum_fold32(sum);
}

/*
 * RFC 1624 incremental update of a checksum `check` (raw, as stored) when
 * the 16-bit-aligned words `from` become `to` (`size` bytes each, a
 * multiple of 4): ~(~check + ~from + to), through bpf_csum_diff.
 */
static __always_inline __u16 csum_replace(__u16 check, __be32 *from, __be32 *to, __u32 size)
{
	__s64 sum = bpf_csum_diff(from, size, to, size, (__u32)(__u16)~check);

	return csum_fold32((__u32)sum);
}

/* Folds a 64-bit one's complement sum to 16 bits, not complemented. */
static __always_inline __u16 csum_fold64_raw(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u16)~csum_fold32((__u32)sum);
}

#endif /* XORLAY_CSUM_H */
