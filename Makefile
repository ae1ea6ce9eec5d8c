# The two set-up commands of the README:
#   make demo   create .venv if missing, install, run the main job
#   make test   install every Debian and Python package the tests need, run the suite
# Both work on a fresh Debian machine as root with nothing installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
# Every install takes the versions of the lock (pip constraints); the build backend too.
PIP    := $(BIN)/python -m pip install --quiet --no-build-isolation -c $(LOCK)

# What the measurements and the tests need from Debian.
DEBIAN_PACKAGES := iproute2 nftables iptables iputils-ping iputils-tracepath traceroute \
                   mtr-tiny tcpdump openssl postfix dovecot-imapd fping scamper \
                   chromium knot unbound rbldnsd postgresql prometheus

# What the live demo's lab needs (a subset: no peers for benchmarks, no browser).
LAB_PACKAGES := iproute2 nftables iputils-ping traceroute openssl postfix dovecot-imapd \
                knot unbound rbldnsd

.PHONY: demo test test-latest lint typecheck pytest notebooks lock debian-packages \
        lab-packages clean

# One stamp per set of extras: `make demo` needs the lab and the analysis, `make test`
# everything the tests run.  A changed pyproject.toml or lock reinstalls.
$(VENV)/.installed-%: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) hatchling editables
	$(PIP) -e '.[$*]'
	$(BIN)/python scripts/check_lock.py
	touch $@

debian-packages:
	sh scripts/install-debian-packages.sh $(DEBIAN_PACKAGES)

# Without root the packages cannot be installed; the demo then says so and reports the
# bundled campaign instead of running the lab.
lab-packages:
	-sh scripts/install-debian-packages.sh $(LAB_PACKAGES)

demo: lab-packages $(VENV)/.installed-lab,analysis
	$(BIN)/netvantage demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench notebooks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

test: debian-packages $(VENV)/.installed-dev lint typecheck pytest

# The executed notebooks, with their outputs, as HTML in out/notebooks/.
notebooks: $(VENV)/.installed-dev
	$(BIN)/python notebooks/render.py --out out/notebooks

# Refresh the lock: the newest versions the bounds in pyproject.toml allow, for every
# extra, on every platform (universal markers).  Commit the result with what it changed.
lock: $(VENV)/.installed-dev
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --all-extras --universal \
	    --python-version 3.11 --upgrade -o $(LOCK)

# Not part of `make test`, never blocking: the suite on the newest release of every
# dependency (no lock), in its own venv, so that drift is seen before it breaks anyone.
# It prints what moved against the lock and the suite's result; its exit code is the suite's.
LATEST := .venv-latest
test-latest: debian-packages
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python scripts/check_lock.py --drift
	$(LATEST)/bin/pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .mypy_cache .ruff_cache .hypothesis out
