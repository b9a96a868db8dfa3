package balancer

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
)

// RoundRobin picks endpoints in turn. It ignores weights.
type RoundRobin struct {
	addrs atomic.Pointer[[]string] // immutable snapshot
	next  atomic.Uint64
}

// NewRoundRobin returns a round-robin balancer over endpoints. The turn
// starts at a random endpoint, and again after every Update, so that many
// clients started or updated together do not all send their first requests
// to the same backend.
func NewRoundRobin(endpoints []Endpoint) *RoundRobin {
	rr := &RoundRobin{}
	rr.Update(endpoints)
	return rr
}

// Pick returns the next endpoint in turn. It takes no lock and allocates
// nothing.
func (rr *RoundRobin) Pick(context.Context) (string, func(error), error) {
	addrs := *rr.addrs.Load()
	if len(addrs) == 0 {
		return "", nil, ErrNoEndpoints
	}
	i := rr.next.Add(1) - 1
	return addrs[i%uint64(len(addrs))], noop, nil
}

// Update replaces the endpoints and restarts the turn at a random one.
func (rr *RoundRobin) Update(endpoints []Endpoint) {
	addrs := addresses(endpoints)
	rr.addrs.Store(&addrs)
	rr.next.Store(rand.Uint64())
}
