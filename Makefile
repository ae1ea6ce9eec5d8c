# The two set-up commands of the README:
#   make demo   create .venv if missing, install, run the main job
#   make test   install every Debian and Python package the tests need, run the suite
# Both work on a fresh Debian machine as root with nothing installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# What the measurements and the tests need from Debian.
DEBIAN_PACKAGES := iproute2 nftables iptables iputils-ping iputils-tracepath traceroute \
                   mtr-tiny tcpdump openssl postfix dovecot-imapd fping scamper \
                   chromium

# What the live demo's lab needs (a subset: no peers for benchmarks, no browser).
LAB_PACKAGES := iproute2 nftables iputils-ping traceroute openssl postfix dovecot-imapd

.PHONY: demo test lint typecheck pytest debian-packages lab-packages clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

debian-packages:
	sh scripts/install-debian-packages.sh $(DEBIAN_PACKAGES)

# Without root the packages cannot be installed; the demo then says so and reports the
# bundled campaign instead of running the lab.
lab-packages:
	-sh scripts/install-debian-packages.sh $(LAB_PACKAGES)

demo: lab-packages $(STAMP)
	$(BIN)/netvantage demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench notebooks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: debian-packages $(STAMP) lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis out
