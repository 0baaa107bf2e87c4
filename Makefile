# The two commands of the README are `make demo` (the main job) and `make test` (the tests).
# Both set up .venv/ first when it is missing or out of date (scripts/setup.sh, idempotent).
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup test demo clean-demo

setup:
	@scripts/setup.sh

test: setup
	@$(ENV) python -m pytest $(PYTEST_ARGS)

demo: setup
	@$(ENV) pixloc-ros demo --out demo_out $(DEMO_ARGS)

clean-demo:
	rm -rf demo_out
