# xorlay: `make demo` and `make test` are all a new user needs (as root, on
# Debian 12). Both install what they need first, idempotently.

SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := clang llvm libbpf-dev ethtool iproute2 util-linux

.PHONY: all deps build demo test lint lab clean-lab

all: build

# Debian packages: the BPF toolchain (clang, libbpf headers), iproute2 and
# ethtool for the namespace lab. Installed only when missing.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust 1.95 or newer (rustup.rs) and retry" >&2; exit 1; }
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		[ "$$(id -u)" = 0 ] || { echo "missing packages:$$missing; run as root or: sudo apt-get install$$missing" >&2; exit 1; }; \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(CARGO) build --release --locked --workspace --bins

# Three routers in namespaces, traffic across them, counters, clean-up.
demo: build
	./target/release/xorlay-bench demo --routers 3

# Keep the lab running until Ctrl-C, to explore it by hand.
lab: build
	./target/release/xorlay-bench lab --routers 3

clean-lab: build
	./target/release/xorlay-bench clean

# Every test, privileged namespace and BPF tests included (run as root),
# then formatting and lints.
test: deps
	$(CARGO) build --locked --workspace --bins
	$(CARGO) test --locked --workspace
	$(MAKE) --no-print-directory lint

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --workspace --no-deps

# Benchmarks (not tests; `make test` runs only a short smoke run of them).
# bench: xorlay against the baselines in one run (about 10 minutes), results in
# results/<unix time>/ (results.json, report.md, SVG charts).
# bench-smoke: the same pipeline in well under a minute, numbers not meant
# to be quoted. bench-micro: criterion, per-packet userspace path.
.PHONY: bench bench-smoke bench-micro
bench: build
	./target/release/xorlay-bench compare

bench-smoke: build
	./target/release/xorlay-bench compare --quick --out results/smoke

bench-micro: deps
	$(CARGO) bench --locked -p xorlay --bench per_packet
