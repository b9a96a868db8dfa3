#!/usr/bin/env bash
# Runs the comparison benchmarks and writes results.txt, RESULTS.md and
# results.svg.
# Usage: bench/run.sh [passes]   (default 6 passes; run from anywhere)
#
# Each pass runs every pool and floor once, one at a time, starting one
# further down the list than the pass before, so that a slow spell of a
# shared machine falls on different pools rather than on every run of one.
# BENCHTIME sets -test.benchtime (default 1s); BENCHTIME=100ms ./run.sh 1
# checks that the whole pipeline works.
set -euo pipefail
cd "$(dirname "$0")"
passes=${1:-6}
benchtime=${BENCHTIME:-1s}

# The sub-benchmarks as named in b.Run; keep these lists in step with the code.
hitpath=(
	Pool=connpool/Keys=1 Pool=connpool/Keys=1000 Pool=connpool/Keys=100000
	Pool=connpool-timeout0/Keys=1 Pool=fatih/Keys=1 Pool=buraksezer/Keys=1
	Pool=silenceper/Keys=1 Pool=puddle/Keys=1
)
acquire=(Pool=clientpool Pool=puddle Pool=drpcpool)
floor=(
	Floor=MutexPopPush Floor=MutexPopPushAlloc32
	Floor=MapMutexPopPush/Keys=1000 Floor=MapMutexPopPush/Keys=100000
	Floor=TimeSince Floor=TimeNow Floor=AtomicLoad
)
echo64=(
	Pool=none Pool=none-reuse Pool=connpool Pool=fatih Pool=buraksezer
	Pool=silenceper Pool=puddle
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/bench.test" .

# bench runs the sub-benchmark $2 of benchmark $1 once, appending its output
# to results.txt. Each element of the name is anchored, so Keys=1 does not
# also select Keys=1000.
bench() {
	local pattern out
	pattern="^$1\$/^${2//\//\$/^}\$"
	if ! out=$("$tmp/bench.test" -test.run '^$' -test.bench "$pattern" -test.count 1 -test.benchtime "$benchtime"); then
		printf '%s\n' "$out" >&2
		exit 1
	fi
	printf '%s\n' "$out" | tee -a results.txt
	if ! grep -q '^Benchmark' <<<"$out"; then
		echo "run.sh: no benchmark matches $1/$2" >&2
		exit 1
	fi
}

# pass runs each sub-benchmark of benchmark $1 named in the remaining
# arguments, starting at the one with index $2 and wrapping around.
pass() {
	local top=$1 start=$2 i
	shift 2
	local names=("$@")
	for ((i = 0; i < ${#names[@]}; i++)); do
		bench "$top" "${names[(start + i) % ${#names[@]}]}"
	done
}

: >results.txt
for ((p = 0; p < passes; p++)); do
	echo "run.sh: pass $((p + 1)) of $passes" >&2
	pass BenchmarkHitPath "$p" "${hitpath[@]}"
	pass BenchmarkAcquireRelease "$p" "${acquire[@]}"
	pass BenchmarkFloor "$p" "${floor[@]}"
	pass BenchmarkEcho64 "$p" "${echo64[@]}"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || true)
machine="$(nproc) cores, ${cpu:-unknown CPU}, $(go version | cut -d' ' -f3-), $(uname -sr)"
go run ./report -in results.txt -md RESULTS.md -svg results.svg -machine "$machine"
if [ -f NOTES.md ]; then
	cat NOTES.md >>RESULTS.md
fi
echo "wrote $(pwd)/RESULTS.md and $(pwd)/results.svg"
