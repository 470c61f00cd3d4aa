# lebm: every target installs what it needs first, so a fresh clone needs nothing else.
# uv from PATH, else the uv Python package (installed with pip on first use).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
VENV := .venv
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/latent_ebm/moons
PYTEST_ARGS ?=
# one pytest-xdist worker per core, at most 4 (each with one torch thread); PYTEST_WORKERS=0
# runs serially
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))

.PHONY: install run test test-fast lint bench experiment clean

$(STAMP): pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	touch $(STAMP)

install: $(STAMP)

# The main job: LatentEBM on two moons (embedded toy data, about 4 minutes on 2 cores). A progress
# bar in a terminal, one line per validation epoch otherwise (CI); ends at <run>/report.html.
run: $(STAMP)
	$(UV) run --frozen lebm fit -c configs/latent_ebm/moons.yaml \
		--trainer.default_root_dir $(RUN_DIR)

test: $(STAMP)
	$(UV) run --frozen pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(UV) run --frozen pytest -q -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(UV) run --frozen ruff check lebm datamodules callbacks tests benchmarks
	$(UV) run --frozen ruff format --check lebm datamodules callbacks tests benchmarks

# Vanilla vs TI latent EBM on digits (lebm.experiments.study --preset digits: 7 runs x 3 seeds,
# 4 epochs each, FID_d every epoch; about 1.8 h on 2 CPU cores): gradient variance and FID_d over
# training, plots, CSV, summary.md under runs/studies/digits. EXPERIMENT_ARGS=--quick: a
# one-minute smoke study on moons; other flags (--seeds, --epochs, --run LABEL=ARGS, --wandb):
# see the module.
EXPERIMENT_ARGS ?= --preset digits
experiment: $(STAMP)
	$(UV) run --frozen python -m lebm.experiments.study $(EXPERIMENT_ARGS)

# Speed and memory against the paper-style reference loop and the peer libraries (TorchEBM,
# diffusers: the `bench` dependency group, installed here only); one torch thread per script.
bench: $(STAMP)
	$(UV) run --frozen --group bench python -m benchmarks.bench_latent_ebm --compile
	$(UV) run --frozen --group bench python -m benchmarks.bench_thermo
	$(UV) run --frozen --group bench python -m benchmarks.bench_score

clean:
	rm -rf runs .pytest_cache
