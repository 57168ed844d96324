# The meter firmware: `make sim` runs it on the desktop, `make test` runs every test.
# Every target builds or refreshes .venv from the pinned requirement files first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test quick sim soak build image deploy bench lint typecheck clean

venv: $(STAMP)

$(STAMP): requirements/host.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, this is " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/host.txt
	@touch $@

test: venv
	$(PY) -m tools.check

quick: venv
	$(PY) -m tools.check --quick

sim: venv
	$(PY) -m tools.sim device --ingest build/sim-ingest

soak: venv
	$(PY) -m tools.sim soak --hours $(or $(HOURS),24)

build: venv
	$(PY) -m tools.build

image: venv
	$(PY) -m tools.image $(if $(VARIANT),--variant $(VARIANT))

bench: venv
	$(PY) -m tools.bench

deploy: venv
	@test -n "$(PORT)" || (echo "usage: make deploy PORT=/dev/ttyUSB0 [IDENTITY=provisioned/identity-SERIAL.json [FORCE_IDENTITY=1]] [SETTINGS=fleet.json] [UPLOAD_URL=https://... CA_CERT=ca.pem] [RESET_SETTINGS=1] [CLEAR_ENERGY=1] [CLEAR_SPOOL=1]   (docs/DEPLOY.md)"; exit 2)
	$(PY) -m tools.deploy --build --port $(PORT) $(if $(IDENTITY),--identity $(IDENTITY)) $(if $(FORCE_IDENTITY),--force-identity) $(if $(SETTINGS),--settings $(SETTINGS)) $(if $(UPLOAD_URL),--upload-url '$(UPLOAD_URL)') $(if $(CA_CERT),--ca-cert $(CA_CERT)) $(if $(RESET_SETTINGS),--reset-settings) $(if $(CLEAR_ENERGY),--clear-energy) $(if $(CLEAR_SPOOL),--clear-spool)

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/pyright --pythonpath $(PY) --typeshedpath "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

clean:
	rm -rf build
