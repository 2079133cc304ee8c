# The README's two commands: `make demo` (main job) and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NOTEBOOKS := $(wildcard notebooks/0*.py)

.PHONY: setup chromium man-tools test demo check lint format notebooks notebooks-ipynb sae sae-packages sae-corpus bench repair-study clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned first: any other torch pulls several GB of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Debian's Chromium drives plotly's static export (PNG/SVG/PDF) through kaleido.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian chromium for static figure export"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: could not install chromium; PNG/SVG/PDF export will be unavailable"; }
	@# Gemma's vocabulary spans many scripts; with only DejaVu/Liberation, Chromium (the browser
	@# tests, PNG/SVG export) draws their tokens as tofu boxes.
	@fc-list 2>/dev/null | grep -q "Noto Sans CJK" || \
	  { echo "installing Noto fonts for token labels in figures"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-core fonts-noto-cjk >/dev/null) || \
	    echo "warning: could not install Noto fonts; some tokens will draw as boxes"; }

# mandoc and col render man pages in the SAE corpus's parser tests (small; the corpus's own
# packages are installed by `make sae-packages` only).
man-tools:
	@command -v mandoc >/dev/null 2>&1 && command -v col >/dev/null 2>&1 || \
	  { echo "installing mandoc and col for the man-page parser"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mandoc bsdextrautils >/dev/null) || \
	    echo "warning: could not install mandoc; the man-page parser test will be skipped"; }

setup: $(STAMP) chromium man-tools

# Two pytest-xdist workers, one thread each (tests/conftest.py), whole files per worker.
test: setup
	$(VENV)/bin/pytest -n 2 --dist loadfile

demo: setup
	$(VENV)/bin/saelora demo

lint:
	$(VENV)/bin/ruff format --check saelora_core tests bench studies scripts notebooks
	$(VENV)/bin/ruff check saelora_core tests bench studies scripts notebooks
	$(VENV)/bin/pyright

format: setup
	$(VENV)/bin/ruff format saelora_core tests bench studies scripts notebooks
	$(VENV)/bin/ruff check --fix saelora_core tests bench studies scripts notebooks

check: setup lint test

notebooks: setup
	$(VENV)/bin/marimo edit notebooks/

notebooks-ipynb: setup
	mkdir -p exports/ipynb
	for nb in $(NOTEBOOKS); do $(VENV)/bin/marimo export ipynb -f $$nb -o exports/ipynb/$$(basename $$nb .py).ipynb || exit 1; done

# The SAE corpus reads text that these Debian packages ship (docs/default_sae.md lists what each
# gives). Installed by `make sae-corpus` only; tests never need them.
SAE_CORPUS_PACKAGES := mandoc groff-base man-db bsdextrautils manpages manpages-fr manpages-de \
  manpages-es manpages-it manpages-pt-br manpages-nl manpages-pl debian-reference-en \
  debian-reference-fr debian-reference-de debian-reference-es debian-reference-it debian-faq \
  maint-guide developers-reference python3.11-doc libpython3.11-stdlib sqlite3-doc \
  postgresql-doc-15 dict-gcide wordnet-base jargon-text fortunes fortunes-min fortunes-de \
  fortunes-es fortunes-it fortunes-br gnome-user-docs libreoffice-help-en-us \
  libreoffice-help-fr libreoffice-help-de libreoffice-help-es

sae-packages:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SAE_CORPUS_PACKAGES)

# The SAE corpus (data/corpus/, not committed; its manifest is): deterministic for the same
# package versions.
sae-corpus: setup sae-packages
	$(VENV)/bin/saelora -v sae corpus --out data/corpus

# The default SAE: corpus -> activation cache -> BatchTopK SAE -> general-text metrics. Every
# stage resumes; on 2 CPU cores without native bf16 it takes many hours (docs/default_sae.md).
# SAE_CACHE_TOKENS: unique tokens cached (91 shards, as the shipped SAE was built; its 8.2M
# training tokens read them 2.75 times). SAE_CACHE_TOKENS=8192000 gives one pass of unique text.
SAE_CACHE_TOKENS ?= 2981888
sae: sae-corpus
	$(VENV)/bin/saelora -v sae build --corpus data/corpus --cache data/activations/gemma-3-270m-l12 \
	  --cache-tokens $(SAE_CACHE_TOKENS) --out data/saes/gemma-3-270m-l12-bt8k \
	  --heldout-cache data/activations/gemma-3-270m-l12-heldout
	$(PY) studies/sae_substrate.py

bench: setup
	$(PY) bench/train_throughput.py
	$(PY) bench/dataset_throughput.py
	$(PY) bench/repair_throughput.py

# The SAE-gap repair comparison (docs/sae_repair.md); resumes from runs/repair-study/.
repair-study: setup
	test -f data/corpus/train.jsonl || $(VENV)/bin/saelora sae corpus
	$(PY) studies/repair_study.py

clean-venv:
	rm -rf $(VENV)
