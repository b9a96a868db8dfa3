package balancer

import (
	"context"
	"math/rand/v2"
)

// Random picks an endpoint uniformly at random among those not ejected. It
// ignores weights.
type Random struct {
	set *endpointSet
}

// NewRandom returns a balancer that picks uniformly at random.
func NewRandom(endpoints []Endpoint, opts ...Option) *Random {
	r := &Random{set: newEndpointSet(opts)}
	r.Update(endpoints)
	return r
}

// Pick returns a random endpoint that is not ejected. It takes no lock and
// allocates nothing.
func (r *Random) Pick(context.Context) (string, func(error), error) {
	snap := r.set.snap.Load()
	if len(snap.healthy) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	if snap.rampUntil != 0 {
		return r.set.pickRamping(snap, randomOf).pick()
	}
	return randomOf(snap.healthy, nil).pick()
}

// randomOf returns a random endpoint of eps; each call draws anew.
func randomOf(eps []*endpoint, _ *endpoint) *endpoint { return eps[rand.IntN(len(eps))] }

// Update replaces the endpoints.
func (r *Random) Update(endpoints []Endpoint) { r.set.update(endpoints) }

// States reports each endpoint's state.
func (r *Random) States() []State { return r.set.states() }
