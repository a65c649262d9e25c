# Everything a fresh clone needs: `make demo` and `make test` both set up
# a project-local virtual environment first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUILD  ?= build

.PHONY: demo test golden bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU wheel of torch first: a bare `torch` requirement would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[torch,jax,plot,dev]"
	touch $(STAMP)

demo: $(STAMP)
	BUILD=$(BUILD) $(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q -p no:cacheprovider

# Regenerate tests/golden/ after an intended change to generated code.
golden: $(STAMP)
	$(PY) -m tests.regen_golden

# Benchmarks (printed, never asserted): BENCHFLAGS="--quick" for a short run, "--no-fused" to skip fused=True.
BENCHFLAGS ?=

bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCHFLAGS)

# One documentation page per built-in (Markdown), as `lossforge doc NAME` writes it.
DOCS ?= docs/builtins

docs: $(STAMP)
	mkdir -p $(DOCS)
	for name in $$($(PY) -c "import lossforge as lf; print(*lf.builtin_names())"); do \
		$(VENV)/bin/lossforge doc $$name -o $(DOCS)/$$name.md || exit 1; \
	done

clean:
	rm -rf $(VENV) $(BUILD) .pytest_cache
