# Two entry points: `make demo` and `make test`. Each creates .venv and installs the project
# (pinned by constraints.txt) when needed, so a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck clean soak bench relay

# A real Nostr relay for the Nostr-lane tests, in its own virtual environment (it pulls in
# many dependencies that the library must not carry). Tests start and stop it themselves.
RELAY_VENV := .relay-venv
RELAY_STAMP := $(RELAY_VENV)/.installed

$(RELAY_STAMP): relay-constraints.txt
	$(PYTHON) -m venv $(RELAY_VENV)
	$(RELAY_VENV)/bin/pip install -q --disable-pip-version-check -c relay-constraints.txt nostr-relay nostr-sdk
	touch $(RELAY_STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/p2pworld demo

test: $(STAMP) $(RELAY_STAMP)
	$(BIN)/ruff check p2pworld discovery tests simulations benchmarks
	$(BIN)/mypy
	@# The simulations use one core; the suite mostly waits on sockets and processes. They run
	@# side by side (the tests must hold with another process busy anyway), and either failing
	@# fails the target; the simulations' summary is printed after the suite's.
	@( $(BIN)/python -m simulations run --scenario all --seeds 0:18 --twice 3 --brief && \
	   $(BIN)/python -m simulations run --scenario all --seeds 0:2 --stores sqlite \
	     --store-latency 0.002 --heavy-seeds 1 --brief ) > .simulations.log 2>&1 & sims=$$!; \
	$(BIN)/python -m pytest -q --durations=15; tests=$$?; \
	wait $$sims; simulations=$$?; cat .simulations.log; \
	echo "make test: pytest exit $$tests, simulations exit $$simulations"; \
	test $$tests -eq 0 && test $$simulations -eq 0

# A long seeded sweep of every scenario (not part of make test), and a shorter one on the
# real sqlite stores.
soak: $(STAMP)
	$(BIN)/python -m simulations run --scenario all --seeds 0:2000 --heavy-seeds 100 --brief
	$(BIN)/python -m simulations run --scenario all --seeds 0:200 --stores sqlite \
	  --store-latency 0.002 --brief

# A local Nostr relay on 127.0.0.1:7777 for `p2pworld demo --relay ws://127.0.0.1:7777`
# (foreground; Ctrl-C stops it). Its storage lives in .relay-data/.
relay: $(RELAY_STAMP) $(STAMP)
	$(BIN)/python -c "from tests.relay import write_config; print(write_config(__import__('pathlib').Path('.relay-data'), 7777))" >/dev/null
	cd .relay-data && ../$(RELAY_VENV)/bin/nostr-relay -c relay.yaml serve

# Benchmarks start Redis and NATS on 127.0.0.1 themselves; this installs them.
bench: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt '.[bench]'
	$(BIN)/python -m benchmarks.channel --json

lint: $(STAMP)
	$(BIN)/ruff check p2pworld discovery tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(RELAY_VENV) .relay-data .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		.simulations.log
