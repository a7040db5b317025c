# Two commands from a fresh clone: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= all

.PHONY: run test lint report setup clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cluster]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/snakemake --cores $(CORES)

# The report of the run made with `--config ...` needs the same values, passed through:
#   make report CONFIG="datasets='[fsdd]' mirror=../shared/datasets"
report: setup
	$(VENV)/bin/snakemake --cores $(CORES) --report results/report.html $(if $(CONFIG),--config $(CONFIG))

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakefmt --check .
	VENV=$(VENV) bash .ci/snakemake-lint

clean:
	rm -rf results resources .snakemake
