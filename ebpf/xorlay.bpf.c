/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Placeholder: replaced by the real program. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "wire.h"
#include "consts.h"

SEC("xdp")
int xorlay_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
