# The two set-up commands of the README. Both work on a fresh Debian machine as root.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || (apt-get update && apt-get install -y python3 python3-venv)
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || (apt-get update && apt-get install -y python3-venv python3-pip)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the tests drive as independent peers.
.debian-test-deps:
	@if ! command -v sipp >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester) \
	  || echo "warning: could not install sip-tester (SIPp)"; fi
	@if ! command -v baresip >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq baresip) \
	  || echo "warning: could not install baresip"; fi
	@if ! command -v minimodem >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq minimodem) \
	  || echo "warning: could not install minimodem (independent caller-ID decoder)"; fi
	@if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core) \
	  || echo "warning: could not install fonts-dejavu-core (PDF reports transliterate)"; fi

run: $(STAMP)
	$(VENV)/bin/minipbx run

# Two workers, a test module per worker at a time (its fixtures and ports stay together):
# most tests wait on the real 20 ms clock and timers, so this halves the wall time.
test: $(STAMP) .debian-test-deps
	$(MAKE) lint
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check firmware webui tests bench

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
