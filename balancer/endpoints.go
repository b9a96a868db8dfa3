package balancer

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// endpointSet holds the endpoints of a balancer and their health. Picks read
// the snapshot without a lock; Update builds a new one under mu.
type endpointSet struct {
	cfg  config
	snap atomic.Pointer[snapshot] // never modified once stored

	ejectedCount atomic.Int64 // endpoints of the snapshot that are ejected

	mu     sync.Mutex // serialises Update
	byAddr map[string]*endpoint
}

// snapshot is an immutable endpoint list.
type snapshot struct {
	eps []*endpoint
}

func newEndpointSet(opts []Option) *endpointSet {
	s := &endpointSet{cfg: defaults(), byAddr: map[string]*endpoint{}}
	for _, opt := range opts {
		opt(&s.cfg)
	}
	s.snap.Store(&snapshot{})
	return s
}

// update replaces the endpoints, keeping the state of addresses that stay.
func (s *endpointSet) update(endpoints []Endpoint) *snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	eps := clean(endpoints)
	next := make(map[string]*endpoint, len(eps))
	snap := &snapshot{eps: make([]*endpoint, len(eps))}
	for i, e := range eps {
		ep := s.byAddr[e.Address]
		if ep == nil {
			ep = &endpoint{address: e.Address, set: s}
			ep.done = ep.finish
		}
		ep.weight.Store(int64(e.Weight))
		next[e.Address] = ep
		snap.eps[i] = ep
	}
	for addr, ep := range s.byAddr {
		if next[addr] == nil {
			s.readmit(ep) // a removed endpoint no longer counts as ejected
		}
	}
	s.byAddr = next
	s.snap.Store(snap)
	return snap
}

// states reports every endpoint's state, in the order of the last Update.
func (s *endpointSet) states() []State {
	eps := s.snap.Load().eps
	out := make([]State, len(eps))
	for i, ep := range eps {
		out[i] = State{
			Address:             ep.address,
			Weight:              int(ep.weight.Load()),
			InFlight:            ep.inflight.Load(),
			ConsecutiveFailures: ep.failures.Load(),
			Ejected:             ep.ejected.Load(),
			LatencyEWMA:         time.Duration(math.Float64frombits(ep.latency.bits.Load())),
		}
		if out[i].Ejected {
			out[i].EjectedUntil = time.Unix(0, ep.ejectedUntil.Load())
		}
	}
	return out
}

// usable returns the first endpoint at or after i (cyclically) that is not
// ejected, or eps[i] if all are: health is ignored rather than failing.
func usable(eps []*endpoint, i int) *endpoint {
	n := len(eps)
	for k := range n {
		if ep := eps[(i+k)%n]; !ep.ejected.Load() {
			return ep
		}
	}
	return eps[i]
}
