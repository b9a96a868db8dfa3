package balancer_test

import (
	"context"
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
