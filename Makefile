# Two commands set up everything on a fresh machine: `make test` and `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Any other torch spec can pull a multi-GB CUDA build; override for GPU machines.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# The versions the suite last passed with (on the Python they were recorded with); on a new
# venv, `make install LOCK=` takes the newest instead.
LOCK ?= constraints.txt

.PHONY: install test lint demo bench clean lock

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q $(if $(LOCK),-c $(LOCK)) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check spiralray tests jobs bench
	$(VENV)/bin/ruff format --check spiralray tests jobs bench

test: $(STAMP)
	$(VENV)/bin/ruff check spiralray tests jobs bench
	$(VENV)/bin/ruff format --check spiralray tests jobs bench
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/spiralray demo

bench: $(STAMP)
	$(VENV)/bin/spiralray bench engine --json
	$(VENV)/bin/spiralray bench compare --json

# After a green `make test` on newer releases (make clean; make install test LOCK=): record them,
# for this Python version only (other versions resolve their own).
lock: $(STAMP)
	v=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^torch==' \
	  | sed "s/\$$/ ; python_version == \"$$v\"/"; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info
