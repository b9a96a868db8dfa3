package balancer

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// Regression: shares must be exact over every cycle. Pick is s.at(s.next.Add(1)-1); two goroutines
// that take positions 4095 and 4096 (the last of a chunk and the first of
// the next) may call at in either order. When 4096 goes first, advance
// replaces the chunk, and 4095 then finds its chunk gone and "takes the same
// position in the current one", position 8191: that position is handed out
// twice and position 4095 never: being overtaken by one pick at a chunk
// boundary, which is ordinary under concurrent picks, was enough.
func TestWRRPickOvertakenAtAChunkBoundaryKeepsItsPosition(t *testing.T) {
	const n = 5000 // weights 1: a long cycle of 5,000 picks, one of each endpoint
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{Address: "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":80"}
	}
	w := NewWeightedRoundRobin(eps)
	s := w.set.snap.Load().view.(*schedule)
	require.Nil(t, s.cycle, "the long-cycle path")

	counts := make([]int, n)
	for i := uint64(0); i < chunkSize-1; i++ {
		counts[s.at(i)]++
	}
	counts[s.at(chunkSize)]++   // the pick that took position 4096 runs first
	counts[s.at(chunkSize-1)]++ // then the one that took 4095
	for i := uint64(chunkSize + 1); i < 2*n; i++ {
		counts[s.at(i)]++
	}
	var wrong []string
	for i, c := range counts {
		if c != 2 {
			wrong = append(wrong, s.eps[i].address+": "+strconv.Itoa(c))
		}
	}
	require.Empty(t, wrong, "two whole cycles give every endpoint exactly two picks")
}
