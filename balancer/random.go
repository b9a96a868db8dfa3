package balancer

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
)

// Random picks an endpoint uniformly at random. It ignores weights.
type Random struct {
	addrs atomic.Pointer[[]string] // immutable snapshot
}

// NewRandom returns a balancer that picks uniformly at random.
func NewRandom(endpoints []Endpoint) *Random {
	r := &Random{}
	r.Update(endpoints)
	return r
}

// Pick returns a random endpoint. It takes no lock and allocates nothing.
func (r *Random) Pick(context.Context) (string, func(error), error) {
	addrs := *r.addrs.Load()
	if len(addrs) == 0 {
		return "", nil, ErrNoEndpoints
	}
	return addrs[rand.IntN(len(addrs))], noop, nil
}

// Update replaces the endpoints.
func (r *Random) Update(endpoints []Endpoint) {
	addrs := addresses(endpoints)
	r.addrs.Store(&addrs)
}
