# oomhero: `make demo` shows it working on this machine; `make test` runs every test
# (host tests here, kernel tests inside a qemu guest on cgroup v2 and on cgroup v1).
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider --color=no -q -rs
RESULTS := test-results

.PHONY: demo test test-host test-guest test-guest-v2 test-guest-v1 test-guest-trixie test-guest-image test-guest-image-built test-image image lint format venv clean bench

STAMP  := $(VENV)/.installed
# The CO-RE probe, built ahead of time (bpf/README.md); without clang it is skipped (bcc then).
BPF_OBJ := oomhero/sources/ebpf/memcg_threshold.bpf.o
BUILT  := $(STAMP) $(BPF_OBJ)

# Debian's python3 with system site-packages: the eBPF path needs Debian's python3-bpfcc.
$(STAMP): pyproject.toml
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'  # dev brings the cli extra (rich)
	touch $(STAMP)

$(BPF_OBJ): bpf/memcg_threshold.bpf.c bpf/memcg_threshold.h bpf/arm64_regs.h bpf/vmlinux.h bpf/build.py
	/usr/bin/python3 bpf/build.py $@

venv: $(BUILT)

demo: $(BUILT)
	$(VENV)/bin/oomhero demo

# Every suite runs even when an earlier one fails; the summary line counts all of them and
# fails when any failed or when a guest suite ran no test. The image is built (on this machine,
# ~2 min from nothing) while the host and first guest suites run; the image suite waits for it.
IMAGE_RC := $(RESULTS)/image-build.rc
test: $(BUILT)
	rm -rf $(RESULTS); mkdir -p $(RESULTS)
	(deploy/build-image > $(RESULTS)/image-build.log 2>&1; echo $$? > $(IMAGE_RC)) &
	-$(MAKE) --no-print-directory test-host
	-$(MAKE) --no-print-directory test-guest-v2
	-$(MAKE) --no-print-directory test-guest-v1
	-$(MAKE) --no-print-directory test-guest-trixie
	-$(MAKE) --no-print-directory test-guest-image-built
	$(PY) tests/junit_summary.py $(RESULTS)/host.xml $(RESULTS)/guest-v2.xml \
		$(RESULTS)/guest-v1.xml $(RESULTS)/guest-trixie.xml $(RESULTS)/guest-image.xml

test-host: $(BUILT)
	$(PYTEST) tests --junitxml=$(RESULTS)/host.xml

test-guest: test-guest-v2 test-guest-v1 test-guest-trixie test-guest-image

test-guest-v2: $(BUILT)
	guest/run --timeout 3600 -- $(PYTEST) tests/real_kernel --junitxml=$(RESULTS)/guest-v2.xml

test-guest-v1: $(BUILT)
	guest/run --v1 -- $(PYTEST) tests/real_kernel --junitxml=$(RESULTS)/guest-v1.xml

# The eBPF probe on a second kernel: Debian trixie's (its charge path and headers differ).
test-guest-trixie: $(BUILT)
	guest/run --kernel trixie --timeout 3600 -- $(PYTEST) tests/real_kernel/test_ebpf.py \
		--junitxml=$(RESULTS)/guest-trixie.xml

# The image, built on this machine from the Dockerfile (deploy/build-image: cached in .cache/
# while its inputs are unchanged), and its pods run by rootful podman in the guest (tests/image/).
# If the image cannot be built, the suite leaves no results and the summary counts it as failed.
image:
	deploy/build-image

GUEST_IMAGE := guest/run --timeout 2400 -- $(PYTEST) tests/image --junitxml=$(RESULTS)/guest-image.xml
test-guest-image: $(BUILT) image
	$(GUEST_IMAGE)

# make test's: the image its background build made (it waits for the build's exit status).
test-guest-image-built: $(BUILT)
	while [ ! -s $(IMAGE_RC) ]; do sleep 2; done
	cat $(RESULTS)/image-build.log
	[ "$$(cat $(IMAGE_RC))" = 0 ]
	$(GUEST_IMAGE)

test-image: test-guest-image

lint: $(STAMP)
	$(VENV)/bin/ruff format --check oomhero tests
	$(VENV)/bin/ruff check oomhero tests

format: $(STAMP)
	$(VENV)/bin/ruff format oomhero tests
	$(VENV)/bin/ruff check --fix oomhero tests

clean:
	rm -rf $(VENV) $(RESULTS) .cache $(BPF_OBJ)

# The benchmark (bench/README.md; not in CI), in one guest boot on the instruction clock (qemu
# -icount shift=0: the guest's time counts its instructions, whatever else the host runs), then
# the tables and plot are rendered on the host. BENCH_ARGS=--quick for a short run;
# BENCH_CLOCK=wall for qemu's usual clock.
BENCH_CPUS ?= 1
BENCH_ARGS ?=
BENCH_CLOCK ?= icount
BENCH_QEMU := $(if $(filter icount,$(BENCH_CLOCK)),-icount shift=0)
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench/.build/alloc: bench/alloc.c
	mkdir -p bench/.build
	gcc -O2 -Wall -Wextra -o $@ $<

bench: $(BENCH_STAMP) bench/.build/alloc
	OOMHERO_GUEST_QEMU_ARGS="$(BENCH_QEMU)" guest/run --cpus $(BENCH_CPUS) --timeout 9000 \
		--env BENCH_CLOCK=$(BENCH_CLOCK) -- $(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/report.py $(if $(BENCH_ARGS),bench/.build/results-dev.json)
