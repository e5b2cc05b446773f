# The project's commands. Each one installs what it needs first (skipping what is there).
#   make run    build the WASM client and the server, then serve http://127.0.0.1:8080/#demo
#   make test   formatting, lints, Rust tests and the browser end-to-end tests
.PHONY: run test build setup e2e bench

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

build:
	bash scripts/setup.sh
	bash scripts/build.sh

e2e:
	bash scripts/e2e.sh

bench:
	bash scripts/bench.sh
