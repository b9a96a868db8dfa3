package connpool

import (
	"io"
	"time"
)

// Trace is a set of hooks that a pool calls as its conns come and go, in
// the manner of net/http/httptrace. Set it with [WithTrace]. Any hook may be
// nil; a nil hook, or a pool without a Trace, costs one comparison where
// the event happens.
//
// Hooks run on the goroutine where the event happens, outside every lock
// of the pool: a slow hook slows that goroutine alone (a Get, a Close, a
// dial of the pool's own, or the cleaner), never other addresses. Hooks may
// run concurrently with each other and must be safe for that.
//
// For one checkout the hooks run in this order: WaitStart and WaitDone if
// it waited at a limit (a second pair if it then waited at the
// [WithMaxTotal] cap), DialStart and DialDone if it dialed, and GotConn if
// it got a conn. When the holder calls Close, either PutConn runs (the conn
// went back to the pool) or ConnClosed does (the pool closed it); Release
// calls ConnClosed with [CloseReleased]. Every conn the pool closes, for
// whatever reason, is reported once by ConnClosed, after its Close returned
// and its slot was freed.
//
// A hook that panics is the caller's bug. The pool does its bookkeeping
// before it calls a hook, so the panic leaves its counts right: it goes on
// to the caller of the pool's method, with what the event concerned given
// back to the pool first (a conn of GotConn or WaitDone is returned, a
// slot of WaitStart or WaitDone freed). A panic in DialStart or DialDone
// is handled as a panic of the dial function (see [ErrDialPanicked]). A
// panic in a hook that the cleaner runs ends the program, as any panic on
// a goroutine of its own does. Hooks that were to run after the panicking
// one for the same batch of events do not run.
type Trace struct {
	// DialStart is called before the dial function runs for address.
	DialStart func(address string)
	// DialDone is called when the dial function returned, with how long
	// it took and its error, nil on success. The error is the *DialError
	// the checkout returns.
	DialDone func(address string, took time.Duration, err error)
	// WaitStart is called when a checkout starts waiting at a
	// [WithMaxActive] limit or the [WithMaxTotal] cap.
	WaitStart func(address string)
	// WaitDone is called when that wait ends, with its length and nil if
	// the checkout was handed a conn or a slot, or else why it gave up
	// ([ErrExhausted], the context's error, [ErrClosed]). A checkout whose
	// handed-over conn failed its checks starts over and may wait again.
	WaitDone func(address string, waited time.Duration, err error)
	// GotConn is called when a checkout is about to return a conn.
	GotConn func(GotConnInfo)
	// PutConn is called when a holder's Close gave a conn back to the
	// pool: onto the idle stack or to a waiting checkout. A Close that
	// closes the conn reports ConnClosed instead. In the shared mode of
	// clientpool.WithShared, PutConn is called when the Close of a
	// value's last lease gave the value back; the end of a lease that
	// leaves others on the value is not an event.
	PutConn func(address string)
	// ConnClosed is called after the pool closed a conn of address, with
	// the reason, which names the Stats counter that counted it.
	ConnClosed func(address string, reason CloseReason)
	// Retry is called when [Pool.Do] retries a request to address that
	// failed with err, after the retry budget allowed it.
	Retry func(address string, err error)
}

// GotConnInfo describes a conn a checkout got, for [Trace].GotConn.
type GotConnInfo struct {
	// Address is the destination.
	Address string
	// Reused is set if the conn came from the idle stack or from a holder
	// that returned it to this waiting checkout, and clear if it was
	// dialed for it.
	Reused bool
	// WasIdle is set if the conn came from the idle stack; these are the
	// checkouts that Counters.Reuses counts.
	WasIdle bool
	// IdleTime is how long a reused conn sat idle, as [Conn.IdleTime]
	// tells.
	IdleTime time.Duration
	// WaitTime is how long the checkout waited at limits, from the start
	// of its first wait to the end of its last, 0 if it did not wait. The
	// dial that may follow a wait is not part of it.
	WaitTime time.Duration
}

// WithTrace sets hooks that the pool calls as its conns come and go (see
// [Trace]). The default is none; a nil t is the same. The pool keeps t:
// change no field after New.
func WithTrace(t *Trace) Option {
	return func(o *options) { o.trace = t }
}

// CloseReason says why the pool closed a conn. Each reason but
// ClosePoolClosed names a counter of [Counters].
type CloseReason uint8

// The reasons a pool closes a conn.
const (
	ClosePoolClosed      CloseReason = iota // the pool was closed; not counted
	CloseIdleTimeout                        // Counters.ClosedIdleTimeout
	CloseMaxLifetime                        // Counters.ClosedMaxLifetime
	CloseBucketFull                         // Counters.ClosedBucketFull
	CloseIdleCapEvicted                     // Counters.ClosedIdleCapEvicted
	CloseForNew                             // Counters.ClosedForNew
	CloseDrained                            // Counters.ClosedDrained
	CloseDeadAtCheckout                     // Counters.ClosedDeadAtCheckout
	CloseDeadWhileIdle                      // Counters.ClosedDeadWhileIdle
	CloseValidatorFailed                    // Counters.ClosedValidatorFailed
	CloseReleased                           // Counters.Released
)

// closeReasonNames are the reasons' names, in snake case as metrics
// labels want them.
var closeReasonNames = [...]string{
	ClosePoolClosed:      "pool_closed",
	CloseIdleTimeout:     "idle_timeout",
	CloseMaxLifetime:     "max_lifetime",
	CloseBucketFull:      "bucket_full",
	CloseIdleCapEvicted:  "idle_cap_evicted",
	CloseForNew:          "for_new",
	CloseDrained:         "drained",
	CloseDeadAtCheckout:  "dead_at_checkout",
	CloseDeadWhileIdle:   "dead_while_idle",
	CloseValidatorFailed: "validator_failed",
	CloseReleased:        "released",
}

// String returns the reason's name in snake case, such as "idle_timeout",
// fit for a metric label.
func (r CloseReason) String() string {
	if int(r) < len(closeReasonNames) {
		return closeReasonNames[r]
	}
	return "unknown"
}

// tracedClose is a conn taken out of service in a pool whose trace has a
// ConnClosed hook: it carries the reason to the hook, which runs once the
// conn is closed and its slot freed (traceClosed).
type tracedClose struct {
	v      io.Closer
	reason CloseReason
}

func (t *tracedClose) Close() error { return t.v.Close() }

// closingLocked returns what the caller closes for v, closed for reason:
// v itself, or v with its reason when a ConnClosed hook waits for it.
func (b *bucket) closingLocked(v io.Closer, reason CloseReason) io.Closer {
	if t := b.pool.trace; t != nil && t.ConnClosed != nil {
		return &tracedClose{v: v, reason: reason}
	}
	return v
}

// traceClosed reports conns of b that were closed and their slots freed
// to the ConnClosed hook. The caller holds no lock.
func (b *bucket) traceClosed(conns []io.Closer) {
	t := b.pool.trace
	if t == nil || t.ConnClosed == nil {
		return
	}
	for _, v := range conns {
		if tc, ok := v.(*tracedClose); ok {
			t.ConnClosed(b.address, tc.reason)
		}
	}
}

// closes reports whether conns, returned by putLocked for pc, hold pc:
// the pool did not keep it.
func closes(conns []io.Closer, pc *pconn) bool {
	for _, v := range conns {
		if tc, ok := v.(*tracedClose); ok {
			v = tc.v
		}
		if v == pc.v {
			return true
		}
	}
	return false
}

// waitSpan is when a checkout first waited at a limit and when its last
// wait ended; both zero if it did not wait.
type waitSpan struct {
	since, end time.Time
}

// checkedOut notes c, which a checkout that waited over span is about to
// return, for leak detection, and calls the GotConn hook. If the hook
// panics, c goes back to the pool first.
func (p *Pool) checkedOut(c *Conn, span *waitSpan) {
	if p.leaks != nil {
		p.leaks.add(c, p.clock()) // exact: a coarse reading could be a tick early
	}
	if p.trace == nil || p.trace.GotConn == nil {
		return
	}
	reused := c.has(reusedBit)
	info := GotConnInfo{Address: c.b.address, Reused: reused, WasIdle: reused && !c.has(notIdleBit), IdleTime: time.Duration(c.idle())}
	if !span.since.IsZero() {
		info.WaitTime = span.end.Sub(span.since)
	}
	returned := false
	defer func() {
		if !returned {
			_ = c.Close()
		}
	}()
	p.trace.GotConn(info)
	returned = true
}

// traceWaitStart calls the WaitStart hook for a checkout at b's address
// that is about to wait. If the hook panics, giveUp takes the checkout out
// of line first.
func (p *Pool) traceWaitStart(b *bucket, giveUp func()) {
	t := p.trace
	if t == nil || t.WaitStart == nil {
		return
	}
	started := false
	defer func() {
		if !started {
			giveUp()
		}
	}()
	t.WaitStart(b.address)
	started = true
}

// traceWaitDone calls the WaitDone hook for a wait at b's address that
// ended with err after waited. If the hook panics, giveBack passes on what
// the wait got, if anything.
func (p *Pool) traceWaitDone(b *bucket, waited time.Duration, err error, giveBack func()) {
	t := p.trace
	if t == nil || t.WaitDone == nil {
		return
	}
	done := false
	defer func() {
		if !done && giveBack != nil {
			giveBack()
		}
	}()
	t.WaitDone(b.address, waited, err)
	done = true
}

// traceDialStart calls the DialStart hook for a dial to b's address and
// returns the time the dial starts, if DialDone wants it.
func (p *Pool) traceDialStart(b *bucket) (start time.Time) {
	t := p.trace
	if t.DialStart != nil {
		t.DialStart(b.address)
	}
	if t.DialDone != nil {
		start = time.Now()
	}
	return start
}

// traceDialDone calls the DialDone hook for a dial to b's address that
// started at start and made v or failed with err. If the hook panics, v is
// closed before the panic goes on, which the pool then handles as a panic
// of the dial function.
func (p *Pool) traceDialDone(b *bucket, start time.Time, v io.Closer, err error) {
	t := p.trace
	if t.DialDone == nil {
		return
	}
	done := false
	defer func() {
		if !done && v != nil {
			_ = v.Close()
		}
	}()
	t.DialDone(b.address, time.Since(start), err)
	done = true
}
