# Conveniences; every recipe is a plain command you can run without just.

# Everything CI runs (README's test command).
test:
    bash test.sh

# One simulator seed, with its knobs, outcome and trace hash.
sim seed="1":
    go run ./cmd/nodesim -seed {{seed}}

# A simulation campaign over a range of seeds, failures kept in reports/.
campaign seeds="1-1000" parallel="2":
    go run ./cmd/nodesim -seeds {{seeds}} -parallel {{parallel}}

# Every fuzz target for a while each.
fuzz time="60s":
    for t in $(go test ./fuzz -list 'Fuzz.*' | grep ^Fuzz); do go test ./fuzz -run '^$' -fuzz "^$t\$" -fuzztime {{time}}; done

# The simulator under WebAssembly: same trace hashes as natively.
wasm:
    GOOS=js GOARCH=wasm go test -exec "$(go env GOROOT)/lib/wasm/go_js_wasm_exec" -run TestTraceHashGolden ./sim/

# Benchmarks of every package.
bench:
    go test -run '^$' -bench . -benchmem ./kvsm ./disk ./net ./sim ./linearizability

# A member, as the README runs it.
run:
    go run ./cmd/noded
