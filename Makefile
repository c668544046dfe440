# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first when it is missing
# (or older than pyproject.toml); the tests also install the optional Ray and JAX extras: a test runs Ray,
# and the tests marked `jax` (train, kill and resume, blend, augmentation) run a second time on JAX.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test install clean

demo: $(STAMP)
	$(BIN)/ensemble demo

# Two test processes at once (pytest-xdist; each member process is a subprocess of its own), then the tests
# held to the wall clock alone, then the JAX subset.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -m "not serial" --durations=15
	$(BIN)/python -m pytest -m serial --durations=5
	KERAS_BACKEND=jax $(BIN)/python -m pytest -n 2 -m jax --durations=5

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[sample]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[sample,test,ray,jax]'
	touch $(TEST_STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
