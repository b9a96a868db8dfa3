package balancer

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
)

// WeightedRoundRobin picks endpoints in proportion to their weights, in a
// smooth sequence: an endpoint of weight 5 among weights 5, 1, 1 comes up as
// a a b a c a a, not a a a a a b c. The sequence of one full cycle is built
// by Update with nginx's smooth weighted round-robin, after dividing the
// weights by their greatest common divisor, so a pick is an atomic increment
// and an index, O(1) without a lock. Ejected endpoints are skipped.
type WeightedRoundRobin struct {
	set  *endpointSet
	seq  atomic.Pointer[weightedSeq]
	next atomic.Uint64
}

// weightedSeq is one full cycle of picks, as indexes into eps.
type weightedSeq struct {
	eps   []*endpoint
	order []uint32
}

// NewWeightedRoundRobin returns a smooth weighted round-robin balancer. The
// cycle starts at a random position, and again after every Update. The
// cycle is as long as the sum of the reduced weights.
func NewWeightedRoundRobin(endpoints []Endpoint, opts ...Option) *WeightedRoundRobin {
	w := &WeightedRoundRobin{set: newEndpointSet(opts)}
	w.Update(endpoints)
	return w
}

// Pick returns the next endpoint of the cycle that is not ejected. It takes
// no lock and allocates nothing.
func (w *WeightedRoundRobin) Pick(context.Context) (string, func(error), error) {
	s := w.seq.Load()
	if len(s.order) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	i := w.next.Add(1) - 1
	return usable(s.eps, int(s.order[i%uint64(len(s.order))])).pick()
}

// Update replaces the endpoints and rebuilds the cycle.
func (w *WeightedRoundRobin) Update(endpoints []Endpoint) {
	snap := w.set.update(endpoints)
	w.seq.Store(smoothSequence(snap.eps))
	w.next.Store(rand.Uint64())
}

// States reports each endpoint's state.
func (w *WeightedRoundRobin) States() []State { return w.set.states() }

// smoothSequence runs nginx's smooth weighted round-robin for one cycle:
// each step adds every endpoint's weight to its current value, picks the
// largest, and takes the total off it.
func smoothSequence(eps []*endpoint) *weightedSeq {
	s := &weightedSeq{eps: eps}
	if len(eps) == 0 {
		return s
	}
	weights := make([]int, len(eps))
	g := 0
	for i, ep := range eps {
		weights[i] = int(ep.weight.Load()) // once: a concurrent Update may change it
		g = gcd(g, weights[i])
	}
	total := 0
	for i := range weights {
		weights[i] /= g
		total += weights[i]
	}
	current := make([]int, len(eps))
	s.order = make([]uint32, total)
	for step := range s.order {
		best := 0
		for i := range eps {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		s.order[step] = uint32(best)
	}
	return s
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
