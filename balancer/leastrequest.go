package balancer

import (
	"context"
	"math/rand/v2"
	"slices"
)

// LeastRequest picks, of a few endpoints chosen at random (two by default,
// see WithChoices), the one with the fewest requests in flight ("power of
// two choices") among those not ejected, breaking ties at random.
// With no more endpoints than choices it compares them all. It ignores
// weights.
type LeastRequest struct {
	set *endpointSet
}

// maxChoices is the most endpoints LeastRequest compares per pick.
const maxChoices = 10

// WithChoices sets how many endpoints LeastRequest samples per pick (the
// choice count of grpc-go's least_request and Envoy's LEAST_REQUEST).
// Values are clamped to [2, 10]; the default is 2. More choices follow load
// more closely and cost a little more per pick. Other policies ignore it.
func WithChoices(n int) Option {
	return func(c *config) { c.choices = min(max(n, 2), maxChoices) }
}

// NewLeastRequest returns a power-of-two-choices balancer over in-flight
// counts.
func NewLeastRequest(endpoints []Endpoint, opts ...Option) *LeastRequest {
	lr := &LeastRequest{set: newEndpointSet(opts)}
	lr.Update(endpoints)
	return lr
}

// Pick returns the least loaded of the sampled endpoints. It takes no lock
// and allocates nothing.
func (lr *LeastRequest) Pick(context.Context) (string, func(error), error) {
	snap := lr.set.snap.Load()
	if len(snap.healthy) == 0 {
		return "", noDone, ErrNoEndpoints
	}
	if snap.rampUntil != 0 {
		return lr.set.pickRamping(snap, lr.choose).pick()
	}
	return lr.choose(snap.healthy, nil).pick()
}

// choose returns the least loaded of k distinct random endpoints of eps,
// which is not empty, other than avoid unless it is the only one.
func (lr *LeastRequest) choose(eps []*endpoint, avoid *endpoint) *endpoint {
	n := len(eps)
	k := lr.set.cfg.choices
	switch {
	case n == 1:
		return eps[0]
	case n <= k:
		return leastLoadedOfAll(eps, avoid)
	case k == 2: // the default, without the general loop
		i, j := twoDistinct(n)
		switch avoid {
		case eps[i]:
			return eps[j]
		case eps[j]:
			return eps[i]
		}
		return lessLoaded(eps[i], eps[j])
	}
	// Samples come in random order and a tie keeps the earlier one, so ties
	// go to a sample chosen uniformly at random.
	var seen [maxChoices]int
	var best *endpoint
	for c := 0; c < k; {
		i := rand.IntN(n)
		if slices.Contains(seen[:c], i) {
			continue // distinct samples
		}
		seen[c] = i
		c++
		switch {
		case eps[i] == avoid:
		case best == nil:
			best = eps[i]
		default:
			best = lessLoaded(best, eps[i])
		}
	}
	return best // not nil: of k ≥ 2 distinct samples, one is not avoid
}

// leastLoadedOfAll compares every endpoint but avoid, of which eps has at
// least two, and returns the least loaded one, breaking ties uniformly at
// random (reservoir sampling over the tied ones).
func leastLoadedOfAll(eps []*endpoint, avoid *endpoint) *endpoint {
	var best *endpoint
	ties := 0
	for _, ep := range eps {
		if ep == avoid {
			continue
		}
		if best == nil {
			best, ties = ep, 1
			continue
		}
		switch next := lessLoaded(best, ep); {
		case next != best:
			best, ties = ep, 1
		case lessLoaded(ep, best) == ep: // a tie: ep is no worse either way
			ties++
			if rand.IntN(ties) == 0 {
				best = ep
			}
		}
	}
	return best
}

// lessLoaded returns the one of a and b with fewer requests in flight; a on
// a tie.
func lessLoaded(a, b *endpoint) *endpoint {
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

// Update replaces the endpoints; in-flight counts of kept addresses stay.
func (lr *LeastRequest) Update(endpoints []Endpoint) { lr.set.update(endpoints) }

// States reports each endpoint's state.
func (lr *LeastRequest) States() []State { return lr.set.states() }

// twoDistinct returns two distinct random indexes below n, which is at
// least 2, from one random number: each half scaled to its range
// (Lemire's multiply-shift, whose bias of at most n/2³² does not matter
// here).
func twoDistinct(n int) (i, j int) {
	r := rand.Uint64()
	i = int((r >> 32) * uint64(n) >> 32)
	j = int((r & 0xffffffff) * uint64(n-1) >> 32)
	if j >= i {
		j++
	}
	return i, j
}
