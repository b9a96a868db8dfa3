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
	eps := r.set.snap.Load().eps
	if len(eps) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	return usable(eps, rand.IntN(len(eps))).pick()
}

// Update replaces the endpoints.
func (r *Random) Update(endpoints []Endpoint) { r.set.update(endpoints) }

// States reports each endpoint's state.
func (r *Random) States() []State { return r.set.states() }
