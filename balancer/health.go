package balancer

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Option configures a balancer.
type Option func(*config)

type config struct {
	threshold int           // consecutive failures that eject
	base, max time.Duration // ejection time: base × ejections, at most max
	maxShare  float64       // most endpoints ejected at once, as a share

	decay          time.Duration // PeakEWMA
	defaultLatency time.Duration // PeakEWMA
	choices        int           // LeastRequest
}

func defaults() config {
	return config{
		threshold: 5, base: 30 * time.Second, max: 300 * time.Second, maxShare: 0.5,
		decay: 10 * time.Second, defaultLatency: 10 * time.Millisecond,
		choices: 2,
	}
}

// WithEjection sets passive health checking: after threshold consecutive
// failed requests (done called with an error), an endpoint is ejected, not
// picked, for base × the number of times it has been ejected, at most max,
// with ±10% jitter. A success resets both counts. Defaults: 5, 30 s, 300 s.
// A threshold of 0 turns ejection off; negative values are treated as 0.
// A base below 1 ms is raised to 1 ms, and a max below base to base, when
// the balancer is built, so that no option can fail a request later.
func WithEjection(threshold int, base, maxTime time.Duration) Option {
	return func(c *config) {
		c.threshold = max0(threshold)
		c.base = max(base, time.Millisecond)
		c.max = max(maxTime, c.base)
	}
}

// WithMaxEjectedShare caps the share of endpoints ejected at once (default
// 0.5). Failures that would eject more are ignored, and if every endpoint a
// pick could use is ejected, health is ignored rather than failing the
// request ("panic mode"). Values are clamped to [0, 1].
func WithMaxEjectedShare(share float64) Option {
	return func(c *config) { c.maxShare = min(max(share, 0), 1) }
}

func max0(n int) int { return max(n, 0) }

// endpoint is the state of one address, kept across Updates while the
// address stays.
type endpoint struct {
	address string
	weight  atomic.Int64 // written by Update while States may read it
	set     *endpointSet

	inflight     atomic.Int64
	failures     atomic.Int64 // consecutive
	ejections    atomic.Int64 // since the last success
	ejected      atomic.Bool
	ejectedUntil atomic.Int64 // unix nanoseconds, for State
	latency      latency      // kept by PeakEWMA only

	done func(error) // ep.finish, bound once so that picks allocate nothing
}

// pick marks the start of a request on ep and returns its done function.
func (ep *endpoint) pick() (string, func(error), error) {
	ep.inflight.Add(1)
	return ep.address, ep.done, nil
}

// finish ends a request on ep with its outcome.
func (ep *endpoint) finish(err error) {
	ep.inflight.Add(-1)
	if err != nil && errors.Is(err, ErrPickNotUsed) {
		return
	}
	if err == nil {
		// Load first: most requests succeed, and a store would dirty a
		// cache line that other cores read.
		if ep.failures.Load() != 0 {
			ep.failures.Store(0)
		}
		if ep.ejections.Load() != 0 {
			ep.ejections.Store(0)
		}
		return
	}
	c := &ep.set.cfg
	if c.threshold > 0 && ep.failures.Add(1) >= int64(c.threshold) {
		ep.set.eject(ep)
	}
}

// State describes one endpoint, for display.
type State struct {
	Address             string
	Weight              int
	InFlight            int64
	ConsecutiveFailures int64
	Ejected             bool
	EjectedUntil        time.Time     // zero unless ejected
	LatencyEWMA         time.Duration // PeakEWMA's estimate; zero elsewhere or before a sample
}

// eject takes ep out of rotation for a while, unless that would eject more
// than the allowed share of endpoints or ep was removed by Update. It runs
// under s.mu, as Update does, so that concurrent failures cannot pass the
// share check together and a late failure of a removed endpoint cannot use
// up the share. Failures are rare, so the lock costs nothing that matters.
func (s *endpointSet) eject(ep *endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr[ep.address] != ep {
		return // removed by Update
	}
	n := len(s.snap.Load().eps)
	if float64(s.ejectedCount.Load()+1) > s.cfg.maxShare*float64(n) {
		return
	}
	if !ep.ejected.CompareAndSwap(false, true) {
		return
	}
	s.ejectedCount.Add(1)
	k := ep.ejections.Add(1)
	d := min(time.Duration(k)*s.cfg.base, s.cfg.max)
	d += time.Duration(rand.Int64N(int64(d)/5+1)) - d/10 // ±10%
	ep.ejectedUntil.Store(time.Now().Add(d).UnixNano())
	ep.failures.Store(0)
	time.AfterFunc(d, func() { s.readmit(ep) })
}

// readmit puts ep back in rotation when its ejection ends.
func (s *endpointSet) readmit(ep *endpoint) {
	if ep.ejected.CompareAndSwap(true, false) {
		s.ejectedCount.Add(-1)
	}
}
