package balancer

import "time"

// Trace is a set of hooks that a [Pool] calls as it picks backends and as
// its balancer's health checks move them in and out of rotation. Set it
// with [WithTrace]. Any hook may be nil. Hooks run on the goroutine where
// the event happens (a request's, or the timer's that ends an ejection or
// an outlier-detection interval), outside every lock of the balancer and
// the pool, and may run concurrently with each other.
//
// A hook that panics is the caller's bug: the balancer finishes its
// bookkeeping before it calls one, so its state stays right. The panic
// goes on to the caller of the Pool's method; a panic in a hook that a
// timer runs ends the program, as any panic on a goroutine of its own
// does.
type Trace struct {
	// Pick is called for each pick of the Pool: with the address chosen
	// for an attempt, or with the error of a balancer that had none to
	// give (then address is empty).
	Pick func(address string, err error)
	// Ejected is called when the balancer took an endpoint out of
	// rotation.
	Ejected func(EjectionInfo)
	// Readmitted is called when an ejected endpoint came back into
	// rotation, when its ejection ended or an Update left too few
	// endpoints for it to stay out, with how long it was out.
	Readmitted func(address string, ejectedFor time.Duration)
	// Retry is called when the Pool tries again after an attempt on
	// address failed with err: on another backend after a failed dial or
	// a connection error of an idempotent request in Do, or on a fresh
	// conn to the same backend after a stale reused one in Do
	// (SameAddress set). The retry budget allowed it.
	Retry func(RetryInfo)
}

// EjectionInfo describes an ejection, for [Trace].Ejected.
type EjectionInfo struct {
	Address string
	Reason  EjectionReason
	// Duration is how long the endpoint stays out of rotation, with its
	// jitter.
	Duration time.Duration
}

// EjectionReason says why an endpoint was ejected.
type EjectionReason string

// The reasons for an ejection, in snake case as metrics labels want them.
const (
	// EjectedForFailures: the consecutive failures of WithEjection.
	EjectedForFailures EjectionReason = "consecutive_failures"
	// EjectedBySuccessRate: the success-rate outlier detection of
	// WithOutlierDetection.
	EjectedBySuccessRate EjectionReason = "success_rate"
	// EjectedByFailurePercentage: the failure-percentage outlier detection
	// of WithOutlierDetection.
	EjectedByFailurePercentage EjectionReason = "failure_percentage"
)

// RetryInfo describes a retry, for [Trace].Retry.
type RetryInfo struct {
	// Address is the backend whose attempt failed, with Err.
	Address string
	Err     error
	// SameAddress is set when the retry goes to the same backend on a
	// fresh conn.
	SameAddress bool
}

// WithTrace sets hooks that the Pool calls as it picks, ejects, re-admits
// and retries (see [Trace]). The ejection and re-admission hooks need a
// balancer of this package: they are attached to it, so a balancer serves
// the trace of the last Pool made with it. The default is none; a nil t is
// the same. The Pool keeps t: change no field after NewPool.
func WithTrace(t *Trace) PoolOption {
	return func(bp *Pool) { bp.trace = t }
}

// healthEvent is an ejection or a re-admission, noted under the set's lock
// and reported to the trace once it is released (unlockAndReport).
type healthEvent struct {
	address string
	ejected bool           // else re-admitted
	reason  EjectionReason // with ejected
	d       time.Duration  // the ejection's length, or how long it was out
}

// noteLocked notes ev for the trace, if there is one. s.mu must be held.
func (s *endpointSet) noteLocked(ev healthEvent) {
	if s.trace.Load() != nil {
		s.pending = append(s.pending, ev)
	}
}

// unlockAndReport releases s.mu and reports the events noted under it,
// unless a Pool's Update holds them back (holdReports).
func (s *endpointSet) unlockAndReport() {
	var events []healthEvent
	if s.held == 0 {
		events = s.pending
		s.pending = nil
	}
	s.mu.Unlock()
	s.report(events)
}

// holdReports makes the set keep the events it notes until
// releaseReports, so that a Pool's Update can report them once its own
// lock is released.
func (s *endpointSet) holdReports() {
	s.mu.Lock()
	s.held++
	s.mu.Unlock()
}

// releaseReports ends a holdReports and returns the events held back, for
// the caller to report.
func (s *endpointSet) releaseReports() []healthEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held--
	if s.held > 0 {
		return nil
	}
	events := s.pending
	s.pending = nil
	return events
}

// report calls the trace's hooks for events. The caller holds no lock.
func (s *endpointSet) report(events []healthEvent) {
	t := s.trace.Load()
	if t == nil {
		return
	}
	for _, ev := range events {
		switch {
		case ev.ejected && t.Ejected != nil:
			t.Ejected(EjectionInfo{Address: ev.address, Reason: ev.reason, Duration: ev.d})
		case !ev.ejected && t.Readmitted != nil:
			t.Readmitted(ev.address, ev.d)
		}
	}
}

// traced is a balancer of this package, whose endpoint set a Pool's trace
// attaches to.
type traced interface{ endpoints() *endpointSet }

func (lr *LeastRequest) endpoints() *endpointSet      { return lr.set }
func (m *Maglev) endpoints() *endpointSet             { return m.set }
func (p *PeakEWMA) endpoints() *endpointSet           { return p.set }
func (r *Random) endpoints() *endpointSet             { return r.set }
func (rr *RoundRobin) endpoints() *endpointSet        { return rr.set }
func (w *WeightedRoundRobin) endpoints() *endpointSet { return w.set }

// tracePick calls the Pick hook, if set, for a pick of address whose done
// function is done (nil if the pick failed with err). If the hook panics,
// the pick is ended as unused first.
func (bp *Pool) tracePick(address string, done func(error), err error) {
	t := bp.trace
	if t == nil || t.Pick == nil {
		return
	}
	ok := false
	defer func() {
		if !ok && done != nil {
			done(ErrPickNotUsed)
		}
	}()
	t.Pick(address, err)
	ok = true
}

// traceRetry calls the Retry hook, if set, for a retry after an attempt on
// address failed with err. If the hook panics, the pick whose done function
// is done, if not nil, is ended as unused first.
func (bp *Pool) traceRetry(address string, err error, same bool, done func(error)) {
	t := bp.trace
	if t == nil || t.Retry == nil {
		return
	}
	ok := false
	defer func() {
		if !ok && done != nil {
			done(ErrPickNotUsed)
		}
	}()
	t.Retry(RetryInfo{Address: address, Err: err, SameAddress: same})
	ok = true
}
