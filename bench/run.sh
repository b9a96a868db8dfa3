#!/usr/bin/env bash
# Runs the comparison benchmarks and writes RESULTS.md and results.svg.
# Usage: bench/run.sh [count]   (default count 6; run from anywhere)
set -euo pipefail
cd "$(dirname "$0")"
count=${1:-6}
go test -run '^$' -bench . -count "$count" . | tee results.txt
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || true)
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(go version | cut -d' ' -f3-), $(uname -sr)"
go run ./report -in results.txt -md RESULTS.md -svg results.svg -machine "$machine"
if [ -f NOTES.md ]; then
	cat NOTES.md >> RESULTS.md
fi
echo "wrote $(pwd)/RESULTS.md and $(pwd)/results.svg"
