// Package balancer chooses which backend each request goes to, for use with
// connpool, which pools connections per address.
//
// A [Balancer] holds a set of endpoints, replaced as a whole with Update,
// and picks one address per request. Picks take no lock: the endpoint set
// is an immutable snapshot behind an atomic pointer, rebuilt by Update.
package balancer

import (
	"context"
	"errors"
	"fmt"
)

// Endpoint is one backend.
type Endpoint struct {
	// Address is what the pool dials, such as "10.0.0.7:11211". It must not
	// be empty, and it must be unique within one Update.
	Address string
	// Weight is the endpoint's relative share for weighted policies. 0
	// means 1; negative is invalid.
	Weight int
}

// Balancer picks a backend for each request.
type Balancer interface {
	// Pick chooses a backend for one request. It must not block, must be
	// safe for concurrent use, and returns ErrNoEndpoints when none is
	// usable. done must be called exactly once with the request's outcome:
	// nil on success, an error wrapping ErrPickNotUsed for a pick that no
	// request used, and any other error for a failure of the backend. It
	// is safe to call after the endpoint was removed. When Pick returns an
	// error, done is a function that does nothing, safe to call or not.
	Pick(ctx context.Context) (address string, done func(err error), err error)
	// Update replaces the set of endpoints. State of kept addresses
	// survives. Invalid endpoints (see Validate) are left out.
	Update(endpoints []Endpoint)
}

var (
	// ErrNoEndpoints is returned by Pick when no endpoint is usable.
	ErrNoEndpoints = errors.New("balancer: no usable endpoint")

	// ErrInvalidEndpoint is wrapped by Validate's errors.
	ErrInvalidEndpoint = errors.New("balancer: invalid endpoint")

	// ErrPickNotUsed is the outcome to pass to done for a pick that was
	// not used for a request, such as a lookup of which endpoint a key maps
	// to, or a request that failed for a reason of the client's own (a
	// cancelled context, a pool at its limit). It counts as neither success
	// nor failure, and is matched with errors.Is, so it may be wrapped.
	ErrPickNotUsed = errors.New("balancer: pick not used")
)

// noDone is the done function Pick returns with an error.
func noDone(error) {}

// Validate reports the first invalid endpoint: an empty address, a negative
// weight or an address given twice. Update leaves such endpoints out; call
// Validate first to reject the whole set instead.
func Validate(endpoints []Endpoint) error {
	seen := make(map[string]bool, len(endpoints))
	for i, ep := range endpoints {
		switch {
		case ep.Address == "":
			return fmt.Errorf("%w: endpoint %d has an empty address", ErrInvalidEndpoint, i)
		case ep.Weight < 0:
			return fmt.Errorf("%w: %s has negative weight %d", ErrInvalidEndpoint, ep.Address, ep.Weight)
		case seen[ep.Address]:
			return fmt.Errorf("%w: %s is given twice", ErrInvalidEndpoint, ep.Address)
		}
		seen[ep.Address] = true
	}
	return nil
}

// clean returns the valid endpoints, in order, with weight 0 made 1.
func clean(endpoints []Endpoint) []Endpoint {
	out := make([]Endpoint, 0, len(endpoints))
	seen := make(map[string]bool, len(endpoints))
	for _, ep := range endpoints {
		if ep.Address == "" || ep.Weight < 0 || seen[ep.Address] {
			continue
		}
		seen[ep.Address] = true
		if ep.Weight == 0 {
			ep.Weight = 1
		}
		out = append(out, ep)
	}
	return out
}

// keyContext carries a request's key for hashing policies.
type keyContext struct{}

// WithKey returns a context carrying key, which consistent-hashing policies
// use to choose the endpoint.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyContext{}, key)
}

// KeyFrom returns the key set with WithKey, if any.
func KeyFrom(ctx context.Context) (string, bool) {
	key, ok := ctx.Value(keyContext{}).(string)
	return key, ok
}
