// Package connpool pools network connections per destination address.
//
// It is meant for clients of load-balanced backends: the caller (or the
// optional balancer subpackage) chooses an address for each request, and the
// pool keeps a small stack of idle connections for every address it has seen.
//
//	pool, err := connpool.New(dial, 16, 90*time.Second)
//	conn, err := pool.Get("10.0.0.7:11211")
//	... use conn ...
//	conn.Close() // returns it to the pool
//
// [Pool.Get] reuses the most recently returned idle conn of an address and
// dials only when there is none. [Pool.New] always dials; it is the retry path
// after a conn turned out to be dead. Calling Close on a conn returns it to the
// pool; calling [Conn.Release] closes the socket for good.
//
// A background cleaner closes conns that sat idle longer than the pool's
// timeout and forgets addresses that have no conns left, so backends that come
// and go do not grow the pool's memory.
//
// Options add limits: [WithMaxActive] caps the conns per address and makes
// checkouts wait in line at the cap, [WithMaxIdle] caps idle conns across all
// addresses with least-recently-used eviction, and [WithMaxLifetime] retires
// conns by age.
//
// [Pool.Stats] counts what happened to the conns of every address;
// [WithTrace] reports each event as it happens, and [WithLeakDetection]
// reports conns checked out and never returned.
package connpool

// Locking, for maintainers (docs/design.md describes the whole engine):
// the lock order is registry.mu, then bucket.mu, then idleLRU.mu,
// retryFloor.mu or totalCap.mu. A goroutine holds at most one bucket.mu at
// a time. No lock is ever held while dialing or closing a socket: conns to
// close are collected under the lock and closed after it is released.
// Trace hooks and leak reports run outside every lock.

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"
)

// Dial creates a connection to address. It is the dial function of the
// predecessor API; see also [WithDialContext].
type Dial func(address string) (net.Conn, error)

var (
	// ErrClosed is returned by Get, GetContext, New and NewContext after
	// [Pool.Close] was called, and by a second call to Pool.Close.
	ErrClosed = errors.New("connpool: pool closed")

	// ErrConnClosed is returned by every method of a [Conn] that does I/O
	// or changes its state once the conn was returned with Close or closed
	// with Release. It wraps [net.ErrClosed], so code that checks
	// errors.Is(err, net.ErrClosed) treats it like any closed conn.
	ErrConnClosed = fmt.Errorf("connpool: conn already returned or released: %w", net.ErrClosed)

	// ErrInvalidConfig is wrapped by the error [New] returns for arguments
	// or options it rejects.
	ErrInvalidConfig = errors.New("connpool: invalid configuration")

	// ErrNilConn is wrapped in a [DialError] when a dial function returns
	// neither a conn nor an error.
	ErrNilConn = errors.New("connpool: dial returned a nil conn and a nil error")

	// ErrExhausted is returned by a checkout that waited for a slot at an
	// address at its [WithMaxActive] limit for the [WithWaitTimeout]
	// duration without getting one.
	ErrExhausted = errors.New("connpool: no conn available: address at its active limit")

	// ErrDialPanicked is wrapped in the [DialError] of a dial that the pool
	// ran in a goroutine of its own (for GetContext, NewContext or Warm) and
	// whose dial function panicked (the message includes the panic value)
	// or called runtime.Goexit.
	// A dial function that panics on the caller's goroutine (Get, New)
	// panics through to the caller, after the pool freed the dial's slot.
	ErrDialPanicked = errors.New("connpool: dial function panicked")
)

// notNew is the panic value of a method called on a nil *Pool or on a Pool
// that [New] did not create.
const notNew = "connpool: Pool used without New (nil or zero-value *Pool)"

// DialError is returned by Get, GetContext, New and NewContext when dialing
// fails. It names the address; Unwrap gives the dial function's error, so
// errors.Is(err, context.DeadlineExceeded) and similar checks work.
type DialError struct {
	Address string
	Err     error
}

func (e *DialError) Error() string {
	return "connpool: dial " + e.Address + ": " + e.Err.Error()
}

func (e *DialError) Unwrap() error { return e.Err }

// An Option configures a [Pool] in [New].
type Option func(*options)

type options struct {
	dialContext func(ctx context.Context, address string) (net.Conn, error)
	dialValue   func(ctx context.Context, address string) (io.Closer, error) // clientpool's dial
	shares      int                                                          // clientpool's WithShared
	sharesSet   bool                                                         // WithShared was given
	maxActive   int
	maxIdle     int
	maxLifetime time.Duration
	waitTimeout time.Duration
	noLiveness  bool
	validator   func(io.Closer) error
	validateAge time.Duration
	clock       func() int64 // replaced by tests in this package
	onPool      func(*Pool)  // tests in this package: called with the new pool

	retryShare     float64
	retryPerSecond int
	retryBudgetSet bool

	minIdle  int
	maxTotal int

	trace *Trace

	leakThreshold time.Duration
	leakReport    func(LeakReport)
}

// WithDialContext sets a dial function that honours a context. When it is
// given, the pool uses it for every dial, and the dial argument of [New] may
// be nil and is ignored. The default is no context dialer; a nil function is
// the same as not giving the option.
//
// Get and New pass a background context. GetContext, NewContext and Warm
// dial in a goroutine of their own with the caller's context values but not
// its cancellation, so a caller that gives up does not waste a dial: its conn
// goes to the next checkout or the idle stack. Those dials are cancelled when
// the pool closes; put a timeout in the dial function (net.Dialer.Timeout)
// to bound them otherwise.
func WithDialContext(dial func(ctx context.Context, address string) (net.Conn, error)) Option {
	return func(o *options) { o.dialContext = dial }
}

// WithMaxActive caps the conns of each address at n: conns being dialed, in
// use and idle all count. At the cap, Get, GetContext, New and NewContext
// wait in arrival order. A returned conn goes straight to the oldest waiter;
// a freed slot (Release, a failed dial, a conn closed as expired, evicted or
// past its lifetime) lets the oldest waiter dial. The default, 0, means no
// cap. Negative n is rejected by [New].
func WithMaxActive(n int) Option {
	return func(o *options) { o.maxActive = n }
}

// WithWaitTimeout bounds how long a checkout waits at a [WithMaxActive] cap
// and at the [WithMaxTotal] cap together; when d runs out it fails with
// [ErrExhausted]. GetContext and NewContext
// also stop waiting when their context ends, whichever comes first. The
// default, 0, means wait without limit. Negative d is rejected by [New].
func WithWaitTimeout(d time.Duration) Option {
	return func(o *options) { o.waitTimeout = d }
}

// WithMaxIdle caps idle conns across all addresses at n. When a returned
// conn would exceed the cap, the least recently returned idle conn of any
// address is closed to make room (counted in ClosedIdleCapEvicted). The
// per-address capacity given to [New] still applies. The default, 0, means
// no cap. Negative n is rejected by [New].
func WithMaxIdle(n int) Option {
	return func(o *options) { o.maxIdle = n }
}

// WithMaxLifetime retires conns by age: no conn is handed out once it is d
// old, counted from the end of its dial. Each conn's lifetime is shortened by
// a random jitter of up to 10% of d, fixed when it is dialed, so conns dialed
// together do not all expire together. Conns past their lifetime are closed
// when returned (busy ones too), at the next Get of their address, and by the
// cleaner. Like the idle timeout, the lifetime is judged without a clock
// read on the hit path (see [New]). The default, 0, means no limit.
// Negative d is rejected by [New].
func WithMaxLifetime(d time.Duration) Option {
	return func(o *options) { o.maxLifetime = d }
}

// WithoutLivenessCheck turns off the built-in liveness check, which by
// default peeks, without blocking, at every idle conn that has a file
// descriptor before Get hands it out, and discards it if the peer has closed
// or reset it or if unread bytes wait on a plain conn (see the README
// section "Stale connections"). The check costs one system call per reused
// conn.
func WithoutLivenessCheck() Option {
	return func(o *options) { o.noLiveness = true }
}

// WithValidator sets a function that Get runs on an idle conn before handing
// it out, after the built-in liveness check, if the conn sat idle for at
// least minIdle (0: every time). It runs outside every lock and may do I/O,
// such as a protocol ping; it must leave the conn clean for the holder. A
// conn it rejects is closed (counted in ClosedValidatorFailed) and the next
// idle conn tried, or a new one dialed. Idle time is judged as for the idle
// timeout (see [New]): a conn may be validated up to a sixteenth of minIdle
// early, never late. The default is no validator; a nil fn is the same.
// Negative minIdle is rejected by [New].
func WithValidator(fn func(net.Conn) error, minIdle time.Duration) Option {
	return func(o *options) {
		o.validator = nil
		if fn != nil {
			o.validator = func(v io.Closer) error { return fn(v.(net.Conn)) }
		}
		o.validateAge = minIdle
	}
}

// Pool keeps idle connections per destination address. It is safe for
// concurrent use. Create it with [New] and release its resources with
// [Pool.Close]. A Pool must be created by New: its methods panic with a
// message saying so when called on a nil *Pool or a zero-value Pool.
type Pool struct {
	dial        func(ctx context.Context, address string) (io.Closer, error)
	capacity    int   // most idle conns kept per address; >= 0
	timeout     int64 // idle timeout in nanoseconds; 0 means never
	maxActive   int   // most conns per address; 0 means no cap
	shares      int32 // most leases per value in shared mode (shared.go); 0 for exclusive mode
	maxLifetime int64 // in nanoseconds; 0 means no limit
	waitTimeout time.Duration
	trace       *Trace       // WithTrace's hooks; nil for none
	leaks       *leakTracker // WithLeakDetection's; nil for none
	observed    bool         // trace or leaks is set: checkouts report to them
	lru         *idleLRU     // nil without WithMaxIdle and WithMaxTotal
	total       *totalCap    // nil without WithMaxTotal

	liveness    bool                  // the built-in check is on
	validator   func(io.Closer) error // nil for none
	validateAge int64                 // nanoseconds of idleness before validator runs

	// retryDeposit is what each checkout pays into its address's retry
	// budget, and retryFloor the pool-wide floor (budget.go).
	retryDeposit float64
	retryFloor   retryFloor

	// clock returns monotonic nanoseconds since the pool was created. Tests
	// in this package replace it. coarse is the latest reading the pool
	// took of it (clock.go): the hit path loads it instead of reading the
	// clock. margin is how far from a limit a conn must be, on the coarse
	// reading, to be reused without an exact one: two cleaner ticks.
	// needClock says whether checkouts judge conns by the clock at all.
	clock     func() int64
	coarse    atomic.Int64
	margin    int64
	needClock bool

	buckets registry
	closed  atomic.Bool

	// closers counts the goroutines closing conns that checkouts took out
	// of service (see bucket.closeLaterLocked). Close waits for them.
	closers sync.WaitGroup

	// minIdle is WithMinIdle's n, bounded by capacity and maxActive; 0
	// for none. topUps counts the cleaner's top-up dials, for tests;
	// topUpSem holds a token for each, to bound how many run at once
	// (minidle.go).
	minIdle  int
	topUps   sync.WaitGroup
	topUpSem chan struct{}

	// closing is cancelled by Close, ending the dials that run in
	// goroutines of their own.
	closing       context.Context
	cancelClosing context.CancelFunc

	stop chan struct{} // closed by Close to stop the cleaner
	done chan struct{} // closed by the cleaner when it has stopped
}

// New creates a pool that dials with dial, keeps at most capacity idle conns
// per address, and closes conns that sat idle for timeout.
//
//   - capacity is the most idle conns kept per address (not across all
//     addresses). Zero keeps none: every returned conn is closed. Negative is
//     rejected.
//   - timeout is how long a conn may sit idle in the pool. Get never hands out
//     a conn that has been idle that long, and a background cleaner closes
//     such conns within about 1.25 × timeout. Zero means idle conns never
//     expire. Negative is rejected. There is no minimum.
//   - dial may be nil only if [WithDialContext] is given.
//
// Get and Close read no clock: they judge idle times and lifetimes on a
// coarse clock that the cleaner renews every tick (a sixteenth of the
// shortest of timeout, [WithMaxLifetime] and the minIdle of
// [WithValidator], between 1 ms and 250 ms; 1 s with none of them), and
// take an exact reading for a conn within two ticks of a limit. The
// guarantees above hold as long as the cleaner goroutine is not kept from
// running for longer than a tick; after a longer stall (a stopped process,
// a paused VM), a conn can be handed out past its limit by up to the
// stall's length, until the cleaner's next tick.
//
// New starts the cleaner goroutine; [Pool.Close] stops it. Errors wrap
// [ErrInvalidConfig].
func New(dial Dial, capacity int, timeout time.Duration, opts ...Option) (*Pool, error) {
	o := options{retryShare: 0.2, retryPerSecond: 10}
	for _, opt := range opts {
		opt(&o)
	}
	for _, check := range []struct {
		bad  bool
		what string
	}{
		{capacity < 0, fmt.Sprintf("capacity %d is negative", capacity)},
		{timeout < 0, fmt.Sprintf("timeout %v is negative", timeout)},
		{dial == nil && o.dialContext == nil && o.dialValue == nil, "dial is nil and no WithDialContext was given"},
		{o.maxActive < 0, fmt.Sprintf("WithMaxActive(%d) is negative", o.maxActive)},
		{o.maxIdle < 0, fmt.Sprintf("WithMaxIdle(%d) is negative", o.maxIdle)},
		{o.maxLifetime < 0, fmt.Sprintf("WithMaxLifetime(%v) is negative", o.maxLifetime)},
		{o.waitTimeout < 0, fmt.Sprintf("WithWaitTimeout(%v) is negative", o.waitTimeout)},
		{o.validateAge < 0, fmt.Sprintf("WithValidator minIdle %v is negative", o.validateAge)},
		{o.minIdle < 0, fmt.Sprintf("WithMinIdle(%d) is negative", o.minIdle)},
		{o.maxTotal < 0, fmt.Sprintf("WithMaxTotal(%d) is negative", o.maxTotal)},
		{o.sharesSet && (o.shares < 1 || o.shares > math.MaxInt32), fmt.Sprintf("WithShared(%d) is not at least 1", o.shares)},
		{o.checkRetryBudget() != "", o.checkRetryBudget()},
		{o.leakThreshold < 0, fmt.Sprintf("WithLeakDetection threshold %v is negative", o.leakThreshold)},
		{o.leakThreshold > 0 && o.leakReport == nil, "WithLeakDetection has a threshold and a nil report"},
	} {
		if check.bad {
			return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, check.what)
		}
	}

	p := &Pool{
		capacity:    capacity,
		timeout:     int64(timeout),
		maxActive:   o.maxActive,
		shares:      int32(o.shares),
		maxLifetime: int64(o.maxLifetime),
		waitTimeout: o.waitTimeout,
		trace:       o.trace,
		liveness:    !o.noLiveness,
		validator:   o.validator,
		validateAge: int64(o.validateAge),
		needClock:   timeout > 0 || o.maxLifetime > 0 || o.validator != nil,
		minIdle:     minIdleTarget(o.minIdle, capacity, o.maxActive),
		topUpSem:    make(chan struct{}, topUpParallel),
		clock:       o.clock,
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	if o.leakThreshold > 0 {
		p.leaks = &leakTracker{threshold: int64(o.leakThreshold), report: o.leakReport}
	}
	p.observed = p.trace != nil || p.leaks != nil
	p.retryDeposit = o.retryShare / (1 + o.retryShare)
	p.retryFloor = retryFloor{perSecond: float64(o.retryPerSecond), tokens: float64(o.retryPerSecond)}
	p.buckets.pool = p
	p.buckets.seed = maphash.MakeSeed()
	if o.maxIdle > 0 {
		p.lru = &idleLRU{max: o.maxIdle}
	}
	if o.maxTotal > 0 {
		p.total = &totalCap{max: o.maxTotal}
		if p.lru == nil {
			p.lru = &idleLRU{max: noIdleCap} // to find the conn to close at the cap
		}
	}
	p.dial = o.dialValue
	switch {
	case p.dial != nil:
	case o.dialContext != nil:
		p.dial = func(ctx context.Context, address string) (io.Closer, error) {
			nc, err := o.dialContext(ctx, address)
			return nc, err // a nil net.Conn stays a nil io.Closer
		}
	default:
		p.dial = func(_ context.Context, address string) (io.Closer, error) {
			nc, err := dial(address)
			return nc, err
		}
	}
	if p.clock == nil {
		epoch := time.Now()
		p.clock = func() int64 { return int64(time.Since(epoch)) }
	}
	p.readClock()
	if o.onPool != nil {
		o.onPool(p)
	}
	p.closing, p.cancelClosing = context.WithCancel(context.Background())

	tick := tickFor(shortestLimit(timeout, o.maxLifetime, o.validateAge, o.leakThreshold))
	p.margin = 2 * int64(tick)
	interval := sweepInterval(timeout, o.maxLifetime)
	if p.minIdle > 0 {
		interval = min(interval, minIdleSweepInterval)
	}
	go p.runCleaner(tick, max(int(interval/tick), 1))
	return p, nil
}

// Get returns an idle conn to address, the most recently returned one first,
// or dials a new one if there is none. The conn's dynamic type is *[Conn].
// Calling Close on it returns it to the pool. At a [WithMaxActive] cap, Get
// waits for a conn or a slot, for at most the [WithWaitTimeout] duration.
func (p *Pool) Get(address string) (net.Conn, error) {
	return asNetConn(p.checkout(context.Background(), address, false))
}

// GetContext is like [Pool.Get] but gives up when ctx is done, returning
// ctx.Err(). With a done ctx it returns at once, without dialing or taking an
// idle conn.
func (p *Pool) GetContext(ctx context.Context, address string) (net.Conn, error) {
	p.mustBeNew()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return asNetConn(p.checkout(ctx, address, false))
}

// New dials a fresh conn to address, ignoring idle ones. Use it to retry
// after a conn from [Pool.Get] turned out to be dead: when the backend
// restarted, every idle conn of the address may be dead too. The conn is
// bound to address like any other and returns to the pool on Close. New
// counts against [WithMaxActive] and waits at the cap as Get does, for a slot
// rather than a returned conn.
func (p *Pool) New(address string) (net.Conn, error) {
	return asNetConn(p.checkout(context.Background(), address, true))
}

// NewContext is like [Pool.New] but gives up when ctx is done, as
// [Pool.GetContext] does.
func (p *Pool) NewContext(ctx context.Context, address string) (net.Conn, error) {
	p.mustBeNew()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return asNetConn(p.checkout(ctx, address, true))
}

// asNetConn returns the result of a checkout as a net.Conn: nil, and not a
// nil *Conn, on error.
func asNetConn(c *Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	return c, nil
}

// mustBeNew panics with a clear message if p was not created by New.
func (p *Pool) mustBeNew() {
	if p == nil || p.dial == nil {
		panic(notNew)
	}
}

// checkout serves Get and New (fresh): a reused conn, a dial, or a wait.
// In shared mode it also serves a share of a value, and adopts a value it
// checked out exclusively as the first lease of a shared one.
func (p *Pool) checkout(ctx context.Context, address string, fresh bool) (*Conn, error) {
	c, err := p.checkoutOne(ctx, address, fresh)
	if p.shares > 0 && err == nil && !c.has(sharedBit) {
		c.b.adopt(c)
	}
	return c, err
}

// checkoutOne serves checkout, but for the adoption of shared mode.
func (p *Pool) checkoutOne(ctx context.Context, address string, fresh bool) (*Conn, error) {
	p.mustBeNew()
	if p.closed.Load() {
		return nil, ErrClosed
	}
	b := p.buckets.lookup(address)
	// span.since is when the checkout first waited, at WithMaxActive or
	// WithMaxTotal: a checkout that starts over waits for what is left of
	// WithWaitTimeout, and counts once in WaitCount.
	var span waitSpan
	for pay := true; ; {
		c, w, gen, err := b.acquire(fresh, pay, !span.since.IsZero())
		switch {
		case err == errBucketDropped:
			// A dropped bucket's budget is gone with it: pay into the
			// bucket that serves the checkout.
			b, pay = p.buckets.lookupSlow(address), true
		case err != nil:
			return nil, err
		case c != nil:
			if (c.has(probedBit) || p.validator != nil) && !p.verify(c) {
				pay = false
				continue // discarded: try the next idle conn, or dial
			}
			if p.observed {
				p.checkedOut(c, &span)
			}
			return c, nil
		case w != nil:
			if span.since.IsZero() {
				span.since = time.Now()
			}
			c, err := p.wait(ctx, b, w, &span)
			if err == errStartOver {
				pay = false
				continue
			}
			if err == nil && p.observed {
				p.checkedOut(c, &span)
			}
			return c, err
		default:
			if err := p.reserveTotal(ctx, b, &span); err == errStartOver {
				pay = false // it waited at the cap, and counted
				continue
			} else if err != nil {
				return nil, err
			}
			c, err := p.dialFor(ctx, b, gen)
			if err == nil && p.observed {
				p.checkedOut(c, &span)
			}
			return c, err
		}
	}
}

// verify runs the liveness check and the validator on a reused conn,
// outside every lock. A conn that fails is taken out of service, its handle
// ended, and verify reports false; the conn is closed in the background.
// A share of a value in use is not checked: other leases use the value
// (see shared.go).
func (p *Pool) verify(c *Conn) bool {
	pc := c.load()
	if !c.has(reusedBit) || c.has(sharedBit) || (!pc.probe.applies() && p.validator == nil) {
		return true
	}
	var reason CloseReason
	switch {
	case pc.probe.applies() && pc.probe.check(pc.v) != nil:
		reason = CloseDeadAtCheckout
	case p.validator != nil && c.idle() >= p.validateAge && !p.validate(c, pc):
		reason = CloseValidatorFailed
	default:
		return true
	}
	c.b.unreuse(c, pc, reason, false)
	return false
}

// validate runs the validator on pc, the conn of c. If the validator
// panics, the conn is closed and its slot freed before the panic goes on.
func (p *Pool) validate(c *Conn, pc *pconn) bool {
	panicked := true
	defer func() {
		if panicked {
			c.b.unreuse(c, pc, CloseValidatorFailed, true)
		}
	}()
	err := p.validator(pc.v)
	panicked = false
	return err == nil
}

// wait parks a checkout at an address at its active cap until it is handed
// a conn or a slot, the pool closes, ctx ends or the wait timeout runs out.
// span.since is when the checkout first waited: the timeout counts from
// then. wait sets span.end when its wait, and any wait at the WithMaxTotal
// cap after it, ends.
func (p *Pool) wait(ctx context.Context, b *bucket, w *waiter, span *waitSpan) (*Conn, error) {
	start := time.Now()
	if p.trace != nil {
		p.traceWaitStart(b, func() { b.giveUp(w, time.Since(start)) })
	}
	var expired <-chan time.Time
	if p.waitTimeout > 0 {
		t := time.NewTimer(p.waitTimeout - start.Sub(span.since))
		defer t.Stop()
		expired = t.C
	}
	var d delivery
	var err error
	select {
	case d = <-w.ch:
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = ErrExhausted
	}
	span.end = time.Now()
	waited := span.end.Sub(start)
	if err != nil {
		b.giveUp(w, waited)
		if p.trace != nil {
			p.traceWaitDone(b, waited, err, nil)
		}
		return nil, err
	}
	b.waited(waited)
	if p.trace != nil {
		// Should the hook panic, the delivery goes back on w, and w
		// gives up as if it had never got it.
		p.traceWaitDone(b, waited, d.err, func() { w.ch <- d; b.giveUp(w, 0) })
	}
	switch {
	case d.c != nil:
		if d.idle && (d.c.has(probedBit) || p.validator != nil) && !p.verify(d.c) {
			return nil, errStartOver // discarded
		}
		return d.c, nil
	case d.grant:
		if err := p.reserveTotal(ctx, b, span); err != nil {
			return nil, err
		}
		return p.dialFor(ctx, b, d.gen)
	default:
		return nil, d.err
	}
}

// Close closes the pool: it stops the cleaner, cancels dials running in
// goroutines of their own, wakes every waiting checkout with [ErrClosed],
// closes every idle conn and returns their close errors combined.
// Afterwards Get and New return ErrClosed without dialing, and conns still
// in use are closed when their holders call Close or Release. A second call
// returns ErrClosed and does nothing else.
func (p *Pool) Close() error {
	p.mustBeNew()
	if !p.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	p.cancelClosing()
	close(p.stop)
	<-p.done

	var drained []discarded
	p.buckets.mu.Lock()
	p.buckets.eachLocked(func(b *bucket) {
		b.mu.Lock()
		drained = append(drained, discarded{b, b.drainLocked()})
		b.mu.Unlock()
	})
	p.buckets.mu.Unlock()

	var result *multierror.Error
	for _, d := range drained {
		result = multierror.Append(result, closeEach(d.conns))
		d.b.freeClosed(len(d.conns))
	}
	// Every bucket, and the registry, was locked above after the pool was
	// marked closed, so no closing goroutine or snapshot build can start
	// now.
	p.closers.Wait()
	p.buckets.builds.Wait()
	// Last, once every conn is closed: a hook that panics leaves nothing
	// undone.
	for _, d := range drained {
		d.b.traceClosed(d.conns)
	}
	return combined("close", result)
}

// closeEach closes conns and returns their close errors combined, or nil.
func closeEach(conns []io.Closer) *multierror.Error {
	var result *multierror.Error
	for _, v := range conns {
		if err := v.Close(); err != nil {
			result = multierror.Append(result, err)
		}
	}
	return result
}

// combined returns the errors of m, gathered by the pool's method what
// (Close, Drain, Warm), as one error, or nil if there are none. It stays a
// *multierror.Error, so errors.Is and errors.As see each of them, but
// reads on one line: "connpool: close: broken pipe", or "connpool: warm: 2
// errors: dial 10.0.0.7:11211: connection refused; context deadline
// exceeded".
func combined(what string, m *multierror.Error) error {
	if m == nil || len(m.Errors) == 0 {
		return nil
	}
	m.ErrorFormat = func(errs []error) string {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = strings.TrimPrefix(err.Error(), "connpool: ")
		}
		if len(msgs) == 1 {
			return "connpool: " + what + ": " + msgs[0]
		}
		return fmt.Sprintf("connpool: %s: %d errors: %s", what, len(msgs), strings.Join(msgs, "; "))
	}
	return m
}

// lifetimeDeadline returns the clock reading at which a conn dialed at now
// reaches its max lifetime, shortened by a random jitter of up to 10%; or 0
// without a max lifetime.
func (p *Pool) lifetimeDeadline(now int64) int64 {
	if p.maxLifetime == 0 {
		return 0
	}
	return now + p.maxLifetime - rand.Int64N(p.maxLifetime/10+1)
}

// discarded is a batch of conns taken out of service in one bucket.
type discarded struct {
	b     *bucket
	conns []io.Closer
}
