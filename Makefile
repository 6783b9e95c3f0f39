# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# -2: machines installed before bubblewrap and git were added check again
APT_STAMP := $(VENV)/.apt-installed-2
APT_PACKAGES := xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libx11-6 libxrandr2 \
	libxinerama1 libxcursor1 libxi6 libxext6 libxxf86vm1 fonts-dejavu-core bubblewrap git

.PHONY: run test bench install apt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q --only-binary=imgui-bundle -e '.[test]'
	touch $(STAMP)

# The GUI tests need Xvfb and Mesa's software GL; shell commands run in bubblewrap; tickets
# commit with git. Installed once, as root, with apt.
$(APT_STAMP): | $(STAMP)
	@if command -v Xvfb >/dev/null 2>&1 && command -v bwrap >/dev/null 2>&1 && command -v git >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so -o -n "$$(ls /usr/lib/*/dri/swrast_dri.so 2>/dev/null)" ]; then \
		echo "apt packages present"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	else \
		echo "Xvfb, bubblewrap or git missing: run 'sudo apt-get install $(APT_PACKAGES)'" >&2; exit 1; \
	fi
	touch $(APT_STAMP)

install: $(STAMP) $(APT_STAMP)

# The app on the offline model, on a demo workspace under .demo/ (git-ignored).
run: install
	mkdir -p .demo/workspace
	$(BIN)/clutch --workspace .demo/workspace

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .demo
