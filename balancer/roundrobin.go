package balancer

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
)

// RoundRobin picks the endpoints that are not ejected in turn, so an
// ejected endpoint's share is spread evenly over the others. It ignores
// weights.
type RoundRobin struct {
	set  *endpointSet
	next atomic.Uint64
}

// NewRoundRobin returns a round-robin balancer over endpoints. The turn
// starts at a random endpoint, and again after every Update, so that many
// clients started or updated together do not all send their first requests
// to the same backend.
func NewRoundRobin(endpoints []Endpoint, opts ...Option) *RoundRobin {
	rr := &RoundRobin{set: newEndpointSet(opts)}
	rr.Update(endpoints)
	return rr
}

// Pick returns the next endpoint in turn that is not ejected. It takes no
// lock and allocates nothing.
func (rr *RoundRobin) Pick(context.Context) (string, func(error), error) {
	snap := rr.set.snap.Load()
	if len(snap.healthy) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	if snap.rampUntil != 0 {
		return rr.set.pickRamping(snap, rr.choose).pick()
	}
	return rr.choose(snap.healthy, nil).pick()
}

// choose returns the endpoint of eps whose turn it is: the turn moves on
// with every call, so there is nothing to avoid.
func (rr *RoundRobin) choose(eps []*endpoint, _ *endpoint) *endpoint {
	i := rr.next.Add(1) - 1
	return eps[i%uint64(len(eps))]
}

// Update replaces the endpoints and restarts the turn at a random one.
func (rr *RoundRobin) Update(endpoints []Endpoint) {
	rr.set.update(endpoints)
	rr.next.Store(rand.Uint64())
}

// States reports each endpoint's state.
func (rr *RoundRobin) States() []State { return rr.set.states() }
