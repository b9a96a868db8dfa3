package balancer

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
	"weak"
)

// Option configures a balancer.
type Option func(*config)

type config struct {
	threshold int           // consecutive failures that eject
	base, max time.Duration // ejection time: base × multiplier, at most max
	maxShare  float64       // most endpoints ejected at once, as a share

	outlier   outlierConfig   // success-rate and failure-percentage ejection
	slowStart slowStartConfig // ramp-up of new and re-admitted endpoints

	decay          decay         // PeakEWMA
	defaultLatency time.Duration // PeakEWMA
	choices        int           // LeastRequest
}

func defaults() config {
	return config{
		threshold: 5, base: 30 * time.Second, max: 300 * time.Second, maxShare: 0.5,
		outlier: outlierConfig{interval: 10 * time.Second},
		decay:   newDecay(10 * time.Second), defaultLatency: time.Second,
		choices: 2,
	}
}

// WithEjection sets passive health checking: after threshold consecutive
// failed requests (done called with an error), an endpoint is ejected, not
// picked, for base × its ejection multiplier, at most max, with ±10%
// jitter. The multiplier goes up by one with each ejection and down by one
// for each outlier-detection interval (10 s unless set with
// WithOutlierDetection) the endpoint spends in rotation without one. A
// success resets the count of consecutive failures. Defaults: 5, 30 s,
// 300 s. A threshold of 0 turns consecutive-failure ejection off; negative
// values are treated as 0. A base below 1 ms is raised to 1 ms, a max
// below base to base, and either above 100 years lowered to 100 years,
// when the balancer is built, so that no option can fail a request later.
func WithEjection(threshold int, base, maxTime time.Duration) Option {
	return func(c *config) {
		c.threshold = max(threshold, 0)
		c.base = min(max(base, time.Millisecond), maxEjection)
		c.max = min(max(maxTime, c.base), maxEjection)
	}
}

// maxEjection is the longest ejection: 100 years stand for "until further
// notice" and leave room for the jitter without overflow.
const maxEjection = 100 * 365 * 24 * time.Hour

// WithMaxEjectedShare caps the share of endpoints ejected at once (default
// 0.5), by consecutive failures and outlier detection together. Ejections
// that would pass it are skipped, an Update that makes the set smaller
// re-admits the endpoints whose ejections end soonest until it holds again, and if every endpoint is ejected, health
// is ignored rather than failing the request ("panic mode"). Values are
// clamped to [0, 1]; NaN means the default.
func WithMaxEjectedShare(share float64) Option {
	return func(c *config) {
		if math.IsNaN(share) {
			share = 0.5
		}
		c.maxShare = min(max(share, 0), 1)
	}
}

// endpoint is the state of one address, kept across Updates while the
// address stays.
type endpoint struct {
	address string
	weight  atomic.Int64 // written by Update while States may read it
	set     *endpointSet

	inflight atomic.Int64
	failures atomic.Int64 // consecutive
	// earlier counts requests in flight at the last re-admission that have
	// not ended: their failures say nothing of the endpoint since, so the
	// next that many failures are not counted. Requests cannot be told
	// apart, so this errs towards ignoring a failure of a newer request.
	earlier      atomic.Int64
	ejected      atomic.Bool  // written under set.mu
	ejections    atomic.Int64 // ejections since the endpoint joined the set
	ejectedUntil atomic.Int64 // unix nanoseconds, for State
	latency      latency      // kept by PeakEWMA only
	rampStart    atomic.Int64 // mono time its slow start began; 0 if none (slowstart.go)
	calls        callCounts   // outcomes in the current interval, with outlier detection (outlier.go)

	// The ejection multiplier and when it last changed; under set.mu.
	multiplier  int64
	readmitted  int64 // mono time of the last re-admission
	ejectedAt   int64 // mono time the current or last ejection began
	ejectionEnd int64 // mono time the current ejection ends

	// ep.finish, and ep.finishSample for each parity of a sample (see
	// latency.sample), bound once so that picks allocate nothing.
	done       func(error)
	sampleDone [2]func(error)
}

func newEndpoint(s *endpointSet, address string) *endpoint {
	ep := &endpoint{address: address, set: s}
	ep.done = ep.finish
	ep.sampleDone = [2]func(error){
		func(err error) { ep.finishSample(0, err) },
		func(err error) { ep.finishSample(1, err) },
	}
	return ep
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
	if ep.earlier.Load() > 0 && ep.endEarlier() && err != nil {
		return // a request from before the re-admission
	}
	c := &ep.set.cfg
	if c.outlier.enabled() {
		ep.calls.record(err == nil)
	}
	if err == nil {
		// Load first: most requests succeed, and a store would dirty a
		// cache line that other cores read.
		if ep.failures.Load() != 0 {
			ep.failures.Store(0)
		}
		return
	}
	if c.threshold > 0 && ep.failures.Add(1) >= int64(c.threshold) {
		ep.set.ejectForFailures(ep)
	}
}

// endEarlier counts down one of the requests in flight at the last
// re-admission, and reports whether there was one left.
func (ep *endpoint) endEarlier() bool {
	for {
		n := ep.earlier.Load()
		if n <= 0 {
			return false
		}
		if ep.earlier.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// State describes one endpoint, for display and metrics.
type State struct {
	Address             string
	Weight              int
	InFlight            int64
	ConsecutiveFailures int64
	Ejected             bool
	EjectedUntil        time.Time     // zero unless ejected
	LatencyEWMA         time.Duration // PeakEWMA's estimate; zero elsewhere or before a sample
	// Ejections counts the endpoint's ejections, for consecutive failures
	// and as an outlier, since it joined the set. It restarts from zero if
	// Update removes the address and a later Update adds it again.
	Ejections int64
}

// ejectForFailures ejects ep for its consecutive failures.
func (s *endpointSet) ejectForFailures(ep *endpoint) {
	s.mu.Lock()
	defer s.unlockAndReport()
	now := mono()
	if ep.failures.Load() < int64(s.cfg.threshold) {
		return // re-admitted meanwhile, which forgot the failures
	}
	if s.ejectLocked(ep, now, EjectedForFailures) {
		ep.failures.Store(0)
		s.publishLocked(s.snap.Load().all, now)
	}
}

// ejectLocked takes ep out of rotation for a while, unless that would eject
// more than the allowed share of endpoints, ep was removed by Update, or ep
// is ejected already, and reports whether it did. The caller publishes a
// new snapshot. Ejections happen under s.mu, as Updates do, so concurrent
// failures cannot pass the share check together and a late failure of a
// removed endpoint cannot use up the share.
func (s *endpointSet) ejectLocked(ep *endpoint, now int64, why EjectionReason) bool {
	if s.byAddr[ep.address] != ep || ep.ejected.Load() {
		return false
	}
	if float64(s.ejected+1) > s.cfg.maxShare*float64(len(s.byAddr)) {
		return false
	}
	ep.ejected.Store(true)
	ep.ejections.Add(1)
	s.ejected++
	// The multiplier went down by one per interval spent in rotation.
	if ep.multiplier > 0 {
		ep.multiplier = max(ep.multiplier-(now-ep.readmitted)/int64(s.cfg.outlier.interval), 0)
	}
	ep.multiplier++
	d := s.cfg.max // base × multiplier, at most max, without overflow
	if ep.multiplier <= int64(s.cfg.max/s.cfg.base) {
		d = time.Duration(ep.multiplier) * s.cfg.base
	}
	d += time.Duration(rand.Int64N(int64(d)/5+1)) - d/10 // ±10%
	ep.ejectedAt = now
	ep.ejectionEnd = now + int64(d)
	ep.ejectedUntil.Store(time.Now().Add(d).UnixNano())
	ep.rampStart.Store(0)
	s.readmitAfter(ep, d, ep.ejectionEnd)
	s.noteLocked(healthEvent{address: ep.address, ejected: true, reason: why, d: d})
	return true
}

// readmitAfter re-admits ep after d, if its ejection that ends at end is
// still on. The timer holds ep weakly, so a balancer dropped by its user can
// be collected with its timers pending.
func (s *endpointSet) readmitAfter(ep *endpoint, d time.Duration, end int64) {
	wp := weak.Make(ep)
	time.AfterFunc(d, func() {
		if ep := wp.Value(); ep != nil {
			ep.set.readmit(ep, end)
		}
	})
}

// readmit puts ep back in rotation when its ejection that ends at end is
// over, starting it slowly if slow start is on.
func (s *endpointSet) readmit(ep *endpoint, end int64) {
	s.mu.Lock()
	defer s.unlockAndReport()
	if s.byAddr[ep.address] != ep || !ep.ejected.Load() || ep.ejectionEnd != end {
		return // removed, or re-admitted already
	}
	now := mono()
	s.readmitLocked(ep, now)
	s.publishLocked(s.snap.Load().all, now)
}

// readmitLocked ends ep's ejection. The caller publishes a new snapshot.
func (s *endpointSet) readmitLocked(ep *endpoint, now int64) {
	ep.ejected.Store(false)
	s.ejected--
	ep.failures.Store(0)                 // failures reported before the re-admission
	ep.earlier.Store(ep.inflight.Load()) // and those of requests made before it
	ep.readmitted = now
	s.startRampLocked(ep, now)
	s.noteLocked(healthEvent{address: ep.address, d: time.Duration(now - ep.ejectedAt)})
}
