# vucompat: `make demo` runs the main job, `make test` runs the tests.
# Both install what they need first (scripts/setup.sh, idempotent).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help setup demo demo-stop test bench bench-coldstart bench-fleet bench-live bench-reliability lint evidence measure clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: ## install Debian packages and the venvs (.venv; os-vif's .venv-osvif), only what is missing
	@scripts/setup.sh

demo: setup ## the main job: two hosts, registry, negotiate, ports on ovs-vswitchd-dpdk, the fleet cluster (KEEP=1 keeps them)
	@KEEP=$(KEEP) $(PY) scripts/demo.py

demo-stop: ## stop what `make demo KEEP=1` left running (by pid)
	@$(PY) scripts/demo.py --stop

test: setup ## run the test suite (unit, property, CLI, functional on real ovsdb-server/cluster/vswitchd/testpmd)
	$(PY) -m pytest -q

bench: setup ## run the benchmarks in bench/ (prints figures; not part of CI)
	$(PY) bench/core.py
	$(PY) bench/registry.py
	$(PY) bench/agent.py
	$(PY) bench/plug.py
	$(PY) bench/relay.py
	$(PY) bench/migration.py
	$(PY) bench/coldstart.py
	$(PY) bench/fleet.py $(SIZES)

bench-coldstart: setup ## `vucompat list` start-up against a bare `python -c pass`, warm and cold table cache (ROUNDS=30)
	$(PY) bench/coldstart.py $(ROUNDS)

bench-live: setup ## live migration with relays on both sides against without (QEMU/TCG, ROUNDS=8); minutes
	$(PY) bench/live_migration.py $(ROUNDS)

bench-fleet: setup ## the fleet cluster and a read relay at scale: SIZES="1000 3000 10000" hosts (default; 30000 needs ~12 GB); minutes
	$(PY) bench/fleet.py $(SIZES)

bench-reliability: setup ## faults on real parts, repeated: held/lost counts (ROUNDS=10, QUICK=1 for 2 rounds); ~10 min
	$(PY) bench/reliability.py $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(QUICK),--quick)

lint: setup ## lint the shipped compat tables, the distribution lineages, their locks, errata and evidence
	$(VENV)/bin/vucompat lint compat_tables
	$(VENV)/bin/vucompat lint compat_tables/distros

evidence: setup ## check every line the evidence files cite (needs clones: VUCOMPAT_MIRRORS=DIR of <owner>+<name>/repo)
	$(PY) scripts/check-evidence

measure: setup ## measure what this machine's ovs-vswitchd-dpdk offers, both port types, TSO off/on (JSON)
	$(PY) scripts/measure-offers.py

clean: ## remove the venv and caches
	rm -rf $(VENV) .venv-osvif .pytest_cache .hypothesis *.egg-info run
