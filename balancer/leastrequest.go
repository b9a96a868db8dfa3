package balancer

import (
	"context"
	"math/rand/v2"
)

// LeastRequest picks, of two endpoints chosen at random, the one with fewer
// requests in flight ("power of two choices"), skipping ejected endpoints.
// With two endpoints or fewer it compares them all. It ignores weights.
type LeastRequest struct {
	set *endpointSet
}

// NewLeastRequest returns a power-of-two-choices balancer over in-flight
// counts.
func NewLeastRequest(endpoints []Endpoint, opts ...Option) *LeastRequest {
	lr := &LeastRequest{set: newEndpointSet(opts)}
	lr.Update(endpoints)
	return lr
}

// Pick returns the less loaded of two distinct random endpoints that are not
// ejected. It takes no lock and allocates nothing.
func (lr *LeastRequest) Pick(context.Context) (string, func(error), error) {
	eps := lr.set.snap.Load().eps
	n := len(eps)
	switch n {
	case 0:
		return "", noDone, ErrNoEndpoints
	case 1:
		return eps[0].pick()
	case 2:
		return lighter(eps[0], eps[1]).pick()
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++ // distinct from i
	}
	return lighter(usable(eps, i), usable(eps, j)).pick()
}

// lighter returns the endpoint with fewer requests in flight, preferring
// one that is not ejected.
func lighter(a, b *endpoint) *endpoint {
	if a.ejected.Load() != b.ejected.Load() {
		if a.ejected.Load() {
			return b
		}
		return a
	}
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

// Update replaces the endpoints; in-flight counts of kept addresses stay.
func (lr *LeastRequest) Update(endpoints []Endpoint) { lr.set.update(endpoints) }

// States reports each endpoint's state.
func (lr *LeastRequest) States() []State { return lr.set.states() }
