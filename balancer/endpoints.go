package balancer

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// endpointSet holds the endpoints of a balancer and their health. Picks read
// the snapshot without a lock; every change (Update, an ejection, a
// re-admission, the end of a slow start) builds a new one under mu.
type endpointSet struct {
	cfg config

	// derive, if set, builds a policy's own structure for a snapshot (the
	// weighted schedule, the Maglev table) before it is published. It runs
	// under mu and is given the snapshot being replaced, so that it can
	// reuse what did not change. Set once, before the first update.
	derive func(prev, next *snapshot)

	snap atomic.Pointer[snapshot] // never modified once stored

	// trace is the trace of the Pool made with the balancer, if any;
	// ejections and re-admissions are reported to it.
	trace atomic.Pointer[Trace]

	mu      sync.Mutex // protects the fields below and serialises every store to snap
	byAddr  map[string]*endpoint
	ejected int           // endpoints of byAddr that are ejected
	pending []healthEvent // for the trace, once mu is released
	held    int           // Pool Updates holding pending back (holdReports)
}

// snapshot is an immutable view of the endpoints for picks.
type snapshot struct {
	all []*endpoint // in the order of the last Update
	// healthy is what picks choose from: the endpoints that are not
	// ejected, in the order of all, or all of them if every one is
	// ejected (panic mode: health is ignored rather than failing).
	healthy []*endpoint
	// view is the policy's structure over healthy, built by derive.
	view any
	// rampUntil is when the last slow start of an endpoint in healthy
	// ends, in mono time; 0 if none is ramping up.
	rampUntil int64
}

func newEndpointSet(opts []Option) *endpointSet {
	s := &endpointSet{cfg: defaults(), byAddr: map[string]*endpoint{}}
	for _, opt := range opts {
		opt(&s.cfg)
	}
	s.snap.Store(&snapshot{})
	s.startOutlierDetection()
	return s
}

// update replaces the endpoints, keeping the state of addresses that stay.
func (s *endpointSet) update(endpoints []Endpoint) {
	s.mu.Lock()
	defer s.unlockAndReport()
	eps := clean(endpoints)
	next := make(map[string]*endpoint, len(eps))
	all := make([]*endpoint, len(eps))
	now := mono()
	joining := len(s.byAddr) > 0 // endpoints added to a set in use start slowly
	for i, e := range eps {
		ep := s.byAddr[e.Address]
		if ep == nil {
			ep = newEndpoint(s, e.Address)
			if joining {
				s.startRampLocked(ep, now)
			}
		}
		ep.weight.Store(int64(e.Weight))
		next[e.Address] = ep
		all[i] = ep
	}
	for addr, ep := range s.byAddr {
		if next[addr] == nil && ep.ejected.CompareAndSwap(true, false) {
			s.ejected-- // a removed endpoint no longer counts as ejected
		}
	}
	s.byAddr = next
	s.fitEjectionsLocked(now)
	s.publishLocked(all, now)
}

// fitEjectionsLocked re-admits ejected endpoints, those whose ejection ends
// soonest first, until the ejected share is within the cap again after an
// Update made the set smaller. s.mu must be held.
func (s *endpointSet) fitEjectionsLocked(now int64) {
	for float64(s.ejected) > s.cfg.maxShare*float64(len(s.byAddr)) {
		var soonest *endpoint
		for _, ep := range s.byAddr {
			if ep.ejected.Load() && (soonest == nil || ep.ejectionEnd < soonest.ejectionEnd) {
				soonest = ep
			}
		}
		s.readmitLocked(soonest, now)
	}
}

// publishLocked stores a new snapshot over all, with healthy, view and
// rampUntil worked out from the endpoints' state at now. s.mu must be held.
func (s *endpointSet) publishLocked(all []*endpoint, now int64) {
	prev := s.snap.Load()
	next := &snapshot{all: all, healthy: all}
	if s.ejected > 0 {
		healthy := make([]*endpoint, 0, len(all))
		for _, ep := range all {
			if !ep.ejected.Load() {
				healthy = append(healthy, ep)
			}
		}
		if len(healthy) > 0 {
			next.healthy = healthy
		}
	}
	for _, ep := range next.healthy {
		if start := ep.rampStart.Load(); start != 0 && start+int64(s.cfg.slowStart.window) > now {
			end := start + int64(s.cfg.slowStart.window)
			next.rampUntil = max(next.rampUntil, end)
		}
	}
	switch {
	case s.derive == nil:
	case len(prev.all) > 0 && len(all) > 0 && &prev.all[0] == &all[0] && slices.Equal(prev.healthy, next.healthy):
		next.view = prev.view // the same endpoints, weights and health: only a slow start ended
	default:
		s.derive(prev, next)
	}
	s.snap.Store(next)
}

// states reports every endpoint's state, in the order of the last Update.
func (s *endpointSet) states() []State {
	eps := s.snap.Load().all
	out := make([]State, len(eps))
	for i, ep := range eps {
		out[i] = State{
			Address:             ep.address,
			Weight:              int(ep.weight.Load()),
			InFlight:            ep.inflight.Load(),
			ConsecutiveFailures: ep.failures.Load(),
			Ejected:             ep.ejected.Load(),
			LatencyEWMA:         time.Duration(math.Float64frombits(ep.latency.bits.Load())),
			Ejections:           ep.ejections.Load(),
		}
		if out[i].Ejected {
			out[i].EjectedUntil = time.Unix(0, ep.ejectedUntil.Load())
		}
	}
	return out
}

// epoch is the origin of mono.
var epoch = time.Now()

// monoOffset keeps mono positive, so that 0 can mean "never", even where
// time.Since(epoch) is negative: in a testing/synctest bubble the clock
// starts in 2000, with no monotonic reading. It leaves 146 years.
const monoOffset = 1 << 62

// mono returns the monotonic clock in nanoseconds, always positive. It
// costs about half of time.Now, which also reads the wall clock.
func mono() int64 { return int64(time.Since(epoch)) + monoOffset }

// ejectedCount returns how many endpoints are ejected.
func (s *endpointSet) ejectedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ejected
}
