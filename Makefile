# Targets people expect: build test race lint fuzz bench.
GO ?= go
FUZZTIME ?= 20s

.PHONY: build test race lint fuzz bench clean

build:
	$(GO) build -o pbatch .

# The README's test command. Tools the end-to-end tests compare against
# (b3sum, …) are installed by .ci/run; tests that need a missing one skip.
test:
	$(GO) vet ./...
	$(GO) test ./...

race:
	$(GO) test -race ./...

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Every fuzz target, each for FUZZTIME (go test runs one fuzz target at a time).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Go micro-benchmarks, then pbatch against the standard Unix tools in one run.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bash bench/bench.sh
	bash bench/extra.sh

clean:
	rm -f pbatch
