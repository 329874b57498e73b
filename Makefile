# InfuseKit — every target bootstraps .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint docs clean venv typecheck trace campaign

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -rf .typings/rp2 && $(BIN)/python -m pip install -q --target .typings/rp2 'micropython-rp2-stubs>=1.24,<2'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/infusekit demo

# the whole suite on both cores (pytest-xdist: each test file stays in one worker, so its
# module fixtures are built once); the same run's requirement report then gates traceability
# (every REQ has a passing test), without rewriting the committed docs/safety/traceability.md
test: $(STAMP)
	mkdir -p build
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15 --req-report=build/req-report.json
	$(BIN)/python tools/trace.py --report build/req-report.json --out build/traceability.md

# hazard → requirement → test → result (docs/safety/traceability.md); fails when a
# requirement has no passing test or a tag names something that does not exist
trace: $(STAMP)
	$(BIN)/python tools/trace.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

# the default randomised fault campaign (hil_sim/campaigns/default.toml, sized for < 30 min on
# 2 cores); its result table becomes docs/safety/campaign.md, outputs in build/campaign
campaign: $(STAMP)
	$(BIN)/python -m hil_sim.campaign.evidence --out build/campaign --doc docs/safety/campaign.md

# generated docs: the state diagram, and the pictures README and docs/ show (docs/img/)
docs: $(STAMP)
	$(BIN)/python -m host.statemachine --write docs/statemachine.md
	$(BIN)/python tools/docs_images.py docs/img

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache out

typecheck: $(STAMP)
	cd firmware && ../$(BIN)/pyright

lint: typecheck
