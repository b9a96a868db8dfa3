package discovery

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/seed73091bf1/connpool/balancer"
)

// Resolver looks names up. *net.Resolver is one.
type Resolver interface {
	LookupHost(ctx context.Context, host string) (addrs []string, err error)
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
}

// netResolver is net.DefaultResolver, read at each lookup.
type netResolver struct{}

func (netResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	return net.DefaultResolver.LookupHost(ctx, host)
}

func (netResolver) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	return net.DefaultResolver.LookupSRV(ctx, service, proto, name)
}

// NewDNS returns a watcher of the A and AAAA records of host: each address
// with port is an endpoint of weight 1. The first resolution runs within
// ctx before NewDNS returns; its error is returned, wrapping
// [ErrNoEndpoints] if the name has no address.
func NewDNS(ctx context.Context, host, port string, u Updater, opts ...Option) (*Watcher, error) {
	if host == "" || port == "" {
		return nil, fmt.Errorf("%w: NewDNS needs a host and a port", errBadOption)
	}
	return newWatcher(ctx, u, func(ctx context.Context, r Resolver) ([]balancer.Endpoint, error) {
		addrs, err := r.LookupHost(ctx, host)
		if err != nil {
			return nil, err
		}
		eps := make([]balancer.Endpoint, 0, len(addrs))
		for _, a := range addrs {
			eps = append(eps, balancer.Endpoint{Address: net.JoinHostPort(a, port)})
		}
		return dedupe(eps), nil
	}, opts)
}

// NewSRV returns a watcher of the SRV records of _service._proto.name (as
// net.LookupSRV builds it; empty service and proto look name up as is),
// following RFC 2782:
//   - only the group of the lowest priority that has a target with an
//     address is used; the others are backups for when it has none;
//   - each target's addresses, with the record's port, are endpoints with
//     the record's weight;
//   - weights are scaled, keeping their ratios as far as integers do, so
//     that the largest is at most 100, which keeps weighted policies cheap;
//   - a target of weight 0 gets the smallest share, 1, against 100 for the
//     heaviest of the group; if every weight is 0, the shares are even.
//
// The first resolution runs within ctx before NewSRV returns.
func NewSRV(ctx context.Context, service, proto, name string, u Updater, opts ...Option) (*Watcher, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: NewSRV needs a name", errBadOption)
	}
	return newWatcher(ctx, u, func(ctx context.Context, r Resolver) ([]balancer.Endpoint, error) {
		_, records, err := r.LookupSRV(ctx, service, proto, name)
		if err != nil {
			return nil, err
		}
		return srvEndpoints(ctx, r, records)
	}, opts)
}

// maxWeight is the largest weight NewSRV passes on.
const maxWeight = 100

// srvEndpoints turns SRV records into endpoints as NewSRV describes. A
// target whose lookup fails is skipped; if every target of every group
// fails, the last error is returned.
func srvEndpoints(ctx context.Context, r Resolver, records []*net.SRV) ([]balancer.Endpoint, error) {
	byPriority := slices.Clone(records)
	slices.SortStableFunc(byPriority, func(a, b *net.SRV) int { return int(a.Priority) - int(b.Priority) })
	var lastErr error
	for start := 0; start < len(byPriority); {
		end := start
		for end < len(byPriority) && byPriority[end].Priority == byPriority[start].Priority {
			end++
		}
		var eps []balancer.Endpoint
		for _, rec := range byPriority[start:end] {
			addrs, err := r.LookupHost(ctx, rec.Target)
			if err != nil {
				lastErr = err
				continue
			}
			port := strconv.Itoa(int(rec.Port))
			for _, a := range addrs {
				eps = append(eps, balancer.Endpoint{Address: net.JoinHostPort(a, port), Weight: int(rec.Weight)})
			}
		}
		if len(eps) > 0 {
			return scaleWeights(dedupe(eps)), nil
		}
		start = end
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, nil // no records: ErrNoEndpoints
}

// dedupe merges endpoints with the same address, adding their weights.
func dedupe(eps []balancer.Endpoint) []balancer.Endpoint {
	out := eps[:0]
	seen := make(map[string]int, len(eps))
	for _, e := range eps {
		if i, ok := seen[e.Address]; ok {
			out[i].Weight += e.Weight
			continue
		}
		seen[e.Address] = len(out)
		out = append(out, e)
	}
	return out
}

// scaleWeights turns the SRV weights of one group into balancer weights:
//   - all 0: every endpoint weighs 1, an even share;
//   - some 0 (RFC 2782: they "should have a very small chance of being
//     selected"): the others are scaled so that the largest is maxWeight,
//     and those of weight 0 weigh 1;
//   - none 0: scaled down only if the largest is above maxWeight, none
//     below 1.
func scaleWeights(eps []balancer.Endpoint) []balancer.Endpoint {
	top, zero := 0, false
	for _, e := range eps {
		top = max(top, e.Weight)
		zero = zero || e.Weight == 0
	}
	if top == 0 || (!zero && top <= maxWeight) {
		for i := range eps {
			eps[i].Weight = max(eps[i].Weight, 1)
		}
		return eps
	}
	for i := range eps {
		eps[i].Weight = max(1, (eps[i].Weight*maxWeight+top/2)/top)
	}
	return eps
}
