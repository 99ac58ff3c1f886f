/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * A candidate traffic generator of `xorlay-bench gen-eval`
 * (bench/src/geneval.rs): a tc program on the generator interface's egress
 * that multiplies every seed frame sent through it with bpf_clone_redirect.
 *
 * Userspace sends seed frames with an AF_PACKET socket (through the qdisc
 * layer, so this hook runs) whose SO_MARK is CG_SEED_MARK; every other
 * frame (the kernel's ARP and neighbor discovery) passes untouched. A seed
 * is re-marked, cloned cg_cfg.copies times to the egress of cg_cfg.ifindex
 * (the same interface), and then consumed (TC_ACT_STOLEN: the sender sees
 * success, the seed itself never leaves). A clone comes back through this
 * hook with the new mark and passes, so the recursion is one level deep.
 *
 * Clones share the seed's data. Plain mode sends copies bytes-for-bytes:
 * every clone of a seed carries the seed's sequence number. Distinct mode
 * writes a fresh sequence number and send time into the seed with
 * bpf_skb_store_bytes before each clone; on a seed that has been cloned that
 * write first copies the linear data (skb_ensure_writable unclones), so
 * distinct mode costs one data copy per frame.
 *
 * Counters are per CPU (cg_stats); the sequence counter is one shared word
 * advanced atomically, so distinct numbers hold on any CPU.
 *
 * The structs below are mirrored in bench/src/geneval.rs (#[repr(C)], sizes
 * asserted there).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* skb->mark of a seed ("xlcs", the sender's SO_MARK) and of a clone
 * ("xlcg"). */
#define CG_SEED_MARK 0x786c6373
#define CG_CLONE_MARK 0x786c6367
/* Most clones per seed. */
#define CG_COPIES_MAX 256
/* Sequence number and send time. */
#define CG_STAMP_LEN 16

/* Counter indexes in struct cg_stats. */
#define CG_SEEDS 0
#define CG_CLONED 1
#define CG_FAILED 2
#define CG_STORE_FAILED 3
#define CG_COUNTERS 4

struct cg_cfg {
	__u32 ifindex;   /* clones go to this interface's egress */
	__u32 copies;    /* clones per seed, at most CG_COPIES_MAX */
	__u32 distinct;  /* nonzero: a fresh stamp before each clone */
	__u32 stamp_off; /* offset of the stamp in the frame */
	__u64 seq_base;  /* trial << 40 */
};

struct cg_stats {
	__u64 counters[CG_COUNTERS];
};

volatile const struct cg_cfg cg_cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cg_stats);
} cg_stats SEC(".maps");

/* Packet number of the next distinct frame. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cg_seq SEC(".maps");

SEC("classifier")
int xl_clonegen(struct __sk_buff *skb)
{
	__u32 key = 0;
	struct cg_stats *s;
	__u64 *next;
	__u32 copies = cg_cfg.copies;

	if (skb->mark != CG_SEED_MARK)
		return TC_ACT_OK;
	s = bpf_map_lookup_elem(&cg_stats, &key);
	next = bpf_map_lookup_elem(&cg_seq, &key);
	if (!s || !next)
		return TC_ACT_OK;
	s->counters[CG_SEEDS]++;
	skb->mark = CG_CLONE_MARK;
	if (copies > CG_COPIES_MAX)
		copies = CG_COPIES_MAX;
	for (__u32 i = 0; i < copies; i++) {
		if (cg_cfg.distinct) {
			__u64 n = __sync_fetch_and_add(next, 1);
			__u64 stamp[2] = {
				bpf_cpu_to_be64(cg_cfg.seq_base | n),
				bpf_cpu_to_be64(bpf_ktime_get_ns()),
			};

			if (bpf_skb_store_bytes(skb, cg_cfg.stamp_off, stamp, CG_STAMP_LEN, 0)) {
				s->counters[CG_STORE_FAILED]++;
				break;
			}
		}
		if (bpf_clone_redirect(skb, cg_cfg.ifindex, 0) == 0)
			s->counters[CG_CLONED]++;
		else
			s->counters[CG_FAILED]++;
	}
	return TC_ACT_STOLEN;
}

char _license[] SEC("license") = "Dual BSD/GPL";
