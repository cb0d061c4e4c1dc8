# The two set-up commands of the README: `make demo` and `make test`. Both build .venv and install
# what they need (Python packages and Debian packages) when missing; running them again is cheap.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast check apt venv clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests and the demo use (packaging/apt-packages.txt); installed only if missing.
apt:
	@bash scripts/apt-install.sh packaging/apt-packages.txt

test: $(STAMP) apt
	$(BIN)/python -m pytest

# The quick part (under two minutes on two cores): everything but the tests marked `slow` (servers,
# browsers, reference tools, long property runs); `make test` still runs them all.
test-fast: $(STAMP) apt
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP) apt
	$(BIN)/mamori demo

check: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
