# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
# `make demo` installs privkd's core only; `make test` adds the test extra (the test tools and
# every optional extra). Both install exactly the versions in requirements.lock, the ones
# `make test` last passed with (CPython 3.11, Linux x86-64); `make demo LOCK=` installs the
# newest allowed versions instead (e.g. on another Python), and `make lock` rewrites the lock
# from .venv.
PYTHON ?= python3
VENV ?= .venv
LOCK ?= requirements.lock
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check $(if $(LOCK),-c $(LOCK))
CORE_STAMP := $(VENV)/.install-core
TEST_STAMP := $(VENV)/.install-test

.PHONY: demo demo-quick test test-slow bench lock docs docs-reference

# A venv made by `make demo` still gets the test extra on its first `make test` (its own stamp);
# one made by `make test` already holds the core, so it counts for `make demo` too.
$(CORE_STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e .
	touch $(CORE_STAMP)

$(TEST_STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[test]'
	touch $(TEST_STAMP) $(CORE_STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/privkd demo

demo-quick: $(CORE_STAMP)
	$(VENV)/bin/privkd demo --quick

# The test command builds the documentation site too (a few seconds), so that a broken link, an
# API reference to a renamed function or a docstring mkdocstrings cannot read fails CI.
test: $(TEST_STAMP)
	$(PY) -m pytest -q --durations=15
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml, docs/) in site/, warnings as errors; the test extra holds its tools.
docs: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# Rewrites the configuration reference from the schema (tests/test_docs.py checks they agree).
docs-reference: $(TEST_STAMP)
	$(PY) -m privkd.config.reference > docs/reference/configuration.md.tmp
	mv docs/reference/configuration.md.tmp docs/reference/configuration.md

test-slow: $(TEST_STAMP)
	$(PY) -m pytest -q -m slow

bench: $(TEST_STAMP)
	$(PY) benchmarks/ot_solver.py
	$(PY) benchmarks/feature_cache.py
	$(PY) benchmarks/train_step.py

# Moving to newer versions: `.venv/bin/pip install -U -e '.[test]'` (no -c), then `make lock`, then
# `make test`. privkd itself is left out of the lock (it is installed from this checkout).
lock:
	@test -f $(TEST_STAMP) || { echo "$(VENV) has no test extra: run make test first" >&2; exit 1; }
	$(PY) -m pip check --disable-pip-version-check
	{ echo "# pip constraints: the versions \`make test\` passed with (CPython 3.11, Linux x86-64)."; \
	  echo "# The Makefile installs with -c $(LOCK). Rewrite with \`make lock\`; do not edit by hand."; \
	  $(PY) -m pip freeze --disable-pip-version-check --all --exclude-editable --exclude privkd --exclude pip; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
