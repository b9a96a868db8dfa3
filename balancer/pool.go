package balancer

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/seed73091bf1/connpool"
)

var (
	// errReleased is the outcome reported for a conn its holder released.
	errReleased = errors.New("balancer: conn released")
)

// Pool puts a Balancer in front of a connpool.Pool: Get picks an address and
// checks out a conn to it, retrying on other addresses when dials fail, and
// the conn reports the request's outcome back to the balancer when it ends.
type Pool struct {
	p        *connpool.Pool
	b        Balancer
	attempts int
	// dialFailed is WithDialFailed's function, or nil.
	dialFailed func(address string, err error)
	trace      *Trace // WithTrace's hooks, or nil

	mu    sync.Mutex                      // serialises Update
	addrs atomic.Pointer[map[string]bool] // the addresses in the set, nil while unknown; replaced, never modified
}

// PoolOption configures a Pool.
type PoolOption func(*Pool)

// WithAttempts sets how many addresses Get tries when dials fail (default 3;
// values below 1 mean 1).
func WithAttempts(n int) PoolOption {
	return func(bp *Pool) { bp.attempts = max(n, 1) }
}

// WithDialFailed sets a function the Pool calls, on the goroutine of the
// request, after a dial to address failed, before it tries another
// address. Point it at a discovery watcher's ResolveNow so that a backend
// that moved is looked up again at once, rather than at the next interval.
// The watcher is made after the Pool it updates, so hold it in a variable
// the function reads safely:
//
//	var watcher atomic.Pointer[discovery.Watcher]
//	bp := balancer.NewPool(pool, rr, balancer.WithDialFailed(func(string, error) {
//		if w := watcher.Load(); w != nil {
//			w.ResolveNow()
//		}
//	}))
//	w, err := discovery.NewDNS(ctx, "backends.internal", "11211", bp)
//	...
//	watcher.Store(w)
//
// It must not block.
func WithDialFailed(fn func(address string, err error)) PoolOption {
	return func(bp *Pool) { bp.dialFailed = fn }
}

// NewPool returns a Pool that picks with b and checks out conns from p.
// Call Update to change the endpoints, so that removed addresses are
// drained from p. If b reports its endpoints (all policies of this package
// do, with States), the Pool starts with them. It panics, naming the
// mistake, if p or b is nil.
func NewPool(p *connpool.Pool, b Balancer, opts ...PoolOption) *Pool {
	switch {
	case p == nil:
		panic("balancer: NewPool needs a *connpool.Pool made by connpool.New; got nil")
	case b == nil:
		panic("balancer: NewPool needs a Balancer; got nil")
	}
	bp := &Pool{p: p, b: b, attempts: 3}
	if s, ok := b.(interface{ States() []State }); ok {
		addrs := map[string]bool{}
		for _, st := range s.States() {
			addrs[st.Address] = true
		}
		bp.addrs.Store(&addrs)
	} // else the set is unknown until the first Update: nothing is drained

	for _, opt := range opts {
		opt(bp)
	}
	if tb, ok := b.(traced); ok {
		tb.endpoints().trace.Store(bp.trace) // nil detaches an earlier Pool's
	}
	return bp
}

// Get picks an address and returns a conn to it. If the dial fails, the
// failure is reported to the balancer and Get picks again, skipping
// addresses that already failed in this call, up to the attempt limit and
// within the retry budget (see connpool.WithRetryBudget) of the address
// that failed, so that a dead cluster is not dialed several times per
// request. The
// conn is a *Conn, which wraps a *connpool.Conn: Close reports success,
// CloseWithError the outcome it is given, and Release failure to the
// balancer.
//
// Only a failure of the backend counts against it: a failed dial (see
// backendFault). Errors of the client's own making, such as a closed pool,
// a cancelled or expired context, or ErrExhausted at a WithMaxActive limit,
// are reported as ErrPickNotUsed, neither success nor failure, so that a
// pool short of conns does not eject the healthy backends it waits for.
func (bp *Pool) Get(ctx context.Context) (net.Conn, error) {
	c, err := bp.get(ctx, nil)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// get serves Get: it picks an address not in failed and checks out a conn
// to it, moving on to another address when a dial fails, up to the attempt
// limit and within the retry budget of the address that failed.
func (bp *Pool) get(ctx context.Context, failed []string) (*Conn, error) {
	var lastErr error
	for attempt := 0; attempt < bp.attempts; attempt++ {
		if lastErr != nil {
			if !bp.p.SpendRetry(failed[len(failed)-1]) {
				return nil, lastErr
			}
			bp.traceRetry(failed[len(failed)-1], lastErr, false, nil)
		}
		addr, done, err := bp.pickExcluding(ctx, failed)
		bp.tracePick(addr, done, err)
		if err != nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, err
		}
		c, err := bp.checkout(ctx, addr, done, false)
		if err == nil {
			return &Conn{Conn: c.(*connpool.Conn), done: done, bp: bp}, nil
		}
		if !backendFault(err) {
			done(ErrPickNotUsed)
			return nil, err
		}
		done(err)
		failed = append(failed, addr)
		lastErr = err
	}
	return nil, lastErr
}

// checkout checks out a conn to addr for a pick whose done is given. If the
// dial function or validator panics on this goroutine, the pick is ended as
// unused before the panic goes on, so it does not stay counted in flight.
func (bp *Pool) checkout(ctx context.Context, addr string, done func(error), fresh bool) (net.Conn, error) {
	returned := false
	defer func() {
		if !returned {
			done(ErrPickNotUsed)
		}
	}()
	get := bp.p.GetContext
	if fresh {
		get = bp.p.NewContext
	}
	c, err := get(ctx, addr)
	returned = true
	if err != nil {
		bp.retireIfGone(addr)
		if bp.dialFailed != nil && backendFault(err) {
			bp.dialFailed(addr, err)
		}
	}
	return c, err
}

// backendFault reports whether a checkout failed because of its backend: a
// dial that failed, but not one cancelled because the pool closed or one
// whose dial function panicked, which are faults of the client.
func backendFault(err error) bool {
	var de *connpool.DialError
	return errors.As(err, &de) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, connpool.ErrDialPanicked)
}

// pickExcluding picks an address not in failed, trying a few times before
// settling for one that is. A keyed request is re-keyed on each try, so a
// consistent-hashing policy moves on to the key's next choice, the same one
// in every client. The try number goes before the key, not after it: with
// FNV-1a (Maglev's hash), keys that differ only in their last byte hash to
// slots nearly in an arithmetic progression, which a backend's own Maglev
// permutation can cover, so all eight re-keys of a key could land on the
// backend that just failed.
func (bp *Pool) pickExcluding(ctx context.Context, failed []string) (string, func(error), error) {
	key, keyed := KeyFrom(ctx)
	pickCtx := ctx
	for tries := 0; ; tries++ {
		addr, done, err := bp.b.Pick(pickCtx)
		if err != nil || !slices.Contains(failed, addr) || tries >= 8 {
			return addr, done, err
		}
		done(ErrPickNotUsed)
		if keyed {
			pickCtx = WithKey(ctx, strconv.Itoa(tries)+"\x00"+key)
		}
	}
}

// Update sets the endpoints of the balancer and drains the addresses that
// left from the connection pool, after releasing its lock. Ejections and
// re-admissions the Update makes are reported to the trace last, outside
// every lock.
func (bp *Pool) Update(endpoints []Endpoint) {
	removed, events := bp.update(endpoints)
	// Outside the lock: Drain closes sockets. A conn checked out to a
	// removed address after this is not pooled either (see Conn.Close).
	for _, addr := range removed {
		bp.retireIfGone(addr) // unless a later Update put it back meanwhile
	}
	if s := bp.set(); s != nil {
		s.report(events)
	}
}

// update serves Update under bp.mu: it returns the addresses that left
// the set, and the health events of the balancer's Update, held back from
// its trace until bp.mu is released.
func (bp *Pool) update(endpoints []Endpoint) (removed []string, events []healthEvent) {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	if s := bp.set(); s != nil {
		s.holdReports()
		defer func() { events = s.releaseReports() }()
	}
	bp.b.Update(endpoints)
	next := make(map[string]bool, len(endpoints))
	for _, ep := range clean(endpoints) {
		next[ep.Address] = true
	}
	if prev := bp.addrs.Load(); prev != nil {
		for addr := range *prev {
			if !next[addr] {
				removed = append(removed, addr)
			}
		}
	}
	bp.addrs.Store(&next)
	return removed, nil
}

// set returns the endpoint set of a balancer of this package whose trace
// is set, or nil.
func (bp *Pool) set() *endpointSet {
	if tb, ok := bp.b.(traced); ok && bp.trace != nil {
		return tb.endpoints()
	}
	return nil
}

// retireIfGone drains addr again if it left the set: a checkout that picked
// it just before the Update that drained it has used it since, which with
// connpool.WithMinIdle would keep it topped up. A checkout that got a conn
// does this when the conn ends (CloseWithError, Release); one that failed,
// at once.
func (bp *Pool) retireIfGone(addr string) {
	if !bp.inSet(addr) {
		_ = bp.p.Drain(addr) // a retired backend's close errors have no caller to go to
	}
}

// inSet reports whether addr is in the current set of endpoints, or the set
// is not known yet (a balancer that does not report its endpoints, before
// the first Update).
func (bp *Pool) inSet(addr string) bool {
	m := bp.addrs.Load()
	return m == nil || (*m)[addr]
}

// Conn is a pooled conn checked out through a Pool. It embeds the
// *connpool.Conn, so Read, Write, Reused and the rest work as there.
type Conn struct {
	*connpool.Conn
	done  func(error)
	bp    *Pool
	ended atomic.Bool
}

// Close returns the conn to the pool and reports success to the balancer.
// A conn to an address that left the set meanwhile (a Get that picked just
// before an Update) is closed rather than pooled.
func (c *Conn) Close() error { return c.CloseWithError(nil) }

// CloseWithError returns the conn to the pool, as Close does, and reports
// outcome to the balancer: nil for a success, an error wrapping
// ErrPickNotUsed for neither, and any other error for a failure of the
// backend. Use it when a request failed but left the conn clean, such as a
// protocol-level error reply, so that the balancer learns of the failure
// without the pool losing the conn. A conn the request left in an unknown
// state must be released with Release instead.
func (c *Conn) CloseWithError(outcome error) error {
	err := c.Conn.Close()
	if c.ended.CompareAndSwap(false, true) {
		c.done(outcome)
		c.bp.retireIfGone(c.Address())
	}
	return err
}

// Release closes the conn and reports failure to the balancer.
func (c *Conn) Release() error {
	err := c.Conn.Release()
	if c.ended.CompareAndSwap(false, true) {
		c.done(errReleased)
		c.bp.retireIfGone(c.Address())
	}
	return err
}
