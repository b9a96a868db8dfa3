package balancer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

func TestWeightedRoundRobinGivesExactSharesOverAFullCycle(t *testing.T) {
	w := balancer.NewWeightedRoundRobin([]balancer.Endpoint{
		{Address: "a", Weight: 5}, {Address: "b", Weight: 1}, {Address: "c"}, {Address: "d", Weight: 3},
	})
	// Weights 5, 1, 1 (0 means 1) and 3: a cycle of 10.
	counts := picks(t, w, 1000)
	assert.Equal(t, map[string]int{"a": 500, "b": 100, "c": 100, "d": 300}, counts)
}

func TestWeightedRoundRobinIsSmooth(t *testing.T) {
	w := balancer.NewWeightedRoundRobin([]balancer.Endpoint{
		{Address: "a", Weight: 5}, {Address: "b", Weight: 1}, {Address: "c", Weight: 1},
	})
	// A bursty scheduler sends a's five requests in a row; the smooth one
	// interleaves b and c, so a never runs for a whole weight's worth.
	var seq []string
	for range 70 {
		addr, done, err := w.Pick(context.Background())
		require.NoError(t, err)
		done(nil)
		seq = append(seq, addr)
	}
	run := 0
	for i, addr := range seq {
		if addr == "a" {
			run++
		} else {
			run = 0
		}
		assert.Less(t, run, 5, "burst at %d: %v", i, seq)
	}
}

func TestWeightedRoundRobinReducesWeights(t *testing.T) {
	w := balancer.NewWeightedRoundRobin([]balancer.Endpoint{{Address: "a", Weight: 400}, {Address: "b", Weight: 200}})
	counts := picks(t, w, 3)
	assert.Equal(t, map[string]int{"a": 2, "b": 1}, counts, "a cycle of 3, not 600")
}

// Regression: the schedule was a precomputed cycle as long as the sum of
// the weights, so 1,000 endpoints with weights up to 65,535 (the SRV range)
// took 20 s and 127 MiB to rebuild.
func TestWeightedRoundRobinUpdateIsLinearInTheEndpoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	eps := make([]balancer.Endpoint, 1000)
	for i := range eps {
		eps[i] = balancer.Endpoint{Address: fmt.Sprint("10.0.", i/256, ".", i%256, ":80"), Weight: 1 + rng.IntN(65535)}
	}
	w := balancer.NewWeightedRoundRobin(nil)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	w.Update(eps)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("Update of 1,000 endpoints with weights up to 65,535 allocated %d bytes", allocated)
	assert.Less(t, allocated, uint64(1<<20), "O(n): about 100 bytes per endpoint and one chunk of the schedule")
	_, done, err := w.Pick(context.Background())
	require.NoError(t, err)
	done(nil)
}

// With a cycle longer than a precomputed chunk, shares are still exact over
// every cycle, and the order still smooth.
func TestWeightedRoundRobinIsExactAndSmoothOverLongCycles(t *testing.T) {
	eps := []balancer.Endpoint{{Address: "a", Weight: 65535}, {Address: "b", Weight: 40000}, {Address: "c", Weight: 7}, {Address: "d", Weight: 1}}
	const cycle = 65535 + 40000 + 7 + 1
	w := balancer.NewWeightedRoundRobin(eps)
	for round := range 3 {
		counts := map[string]int{}
		lastC, maxGapC := -1, 0
		for i := range cycle {
			addr, done, err := w.Pick(context.Background())
			require.NoError(t, err)
			done(nil)
			counts[addr]++
			if addr == "c" {
				if lastC >= 0 {
					maxGapC = max(maxGapC, i-lastC)
				}
				lastC = i
			}
		}
		assert.Equal(t, map[string]int{"a": 65535, "b": 40000, "c": 7, "d": 1}, counts, "cycle %d", round)
		assert.InDelta(t, cycle/7, maxGapC, 10, "c comes up every seventh of a cycle, not in a burst")
	}
}
