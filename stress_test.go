package connpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/stretchr/testify/assert"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// Bounds of one stress phase: every worker stops after stressOps operations
// or when stressBudget has passed, whichever comes first.
const (
	stressWorkers = 8
	stressOps     = 600
	stressBudget  = 700 * time.Millisecond
	stressMaxHeld = 3  // conns one worker holds at once, at most
	stressStale   = 8  // ended handles one worker keeps to misuse
	stressAfter   = 25 // operations each worker runs after Pool.Close
)

// stressAddrs are the addresses the stress workers spread over.
var stressAddrs = []string{"a:1", "b:1", "c:1"}

// errStressRefused is the error of the dials a stressDialer fails.
var errStressRefused = errors.New("stress: dial refused")

// stressCase is one pool configuration the stress test runs against.
type stressCase struct {
	name        string
	capacity    int
	timeout     time.Duration
	maxActive   int
	waitTimeout time.Duration
	maxIdle     int
	maxLifetime time.Duration
	dialContext bool          // dial through WithDialContext rather than a Dial
	failEvery   int64         // every failEvery-th dial fails; 0: none
	slowEvery   int64         // every slowEvery-th dial takes up to slowest; 0: none
	slowest     time.Duration // bounded; slow dials end early when their context does
}

func (tc stressCase) options(d *stressDialer) (connpool.Dial, []connpool.Option) {
	var opts []connpool.Option
	if tc.maxActive > 0 {
		opts = append(opts, connpool.WithMaxActive(tc.maxActive))
	}
	if tc.waitTimeout > 0 {
		opts = append(opts, connpool.WithWaitTimeout(tc.waitTimeout))
	}
	if tc.maxIdle > 0 {
		opts = append(opts, connpool.WithMaxIdle(tc.maxIdle))
	}
	if tc.maxLifetime > 0 {
		opts = append(opts, connpool.WithMaxLifetime(tc.maxLifetime))
	}
	if tc.dialContext {
		return nil, append(opts, connpool.WithDialContext(d.DialContext))
	}
	return d.Dial, opts
}

// TestConcurrentStressKeepsEveryInvariant runs every public operation of a
// Pool from several goroutines at once, against fake conns, over several
// option sets. The first phase runs everything but Pool.Close and ends at a
// quiescent point, where the pool's counts must match the sockets really
// open. In the second phase one goroutine closes the pool while the others
// keep going. Throughout, no socket may be held by two callers, no closed
// socket handed out, no more sockets than WithMaxActive exist per address,
// and every result must be one the API documents; at the end every dialed
// socket must have been closed exactly once.
func TestConcurrentStressKeepsEveryInvariant(t *testing.T) {
	tests := []stressCase{
		{name: "no options", capacity: 4},
		{
			name: "max active 2 with wait timeout", capacity: 4,
			maxActive: 2, waitTimeout: 3 * time.Millisecond,
			dialContext: true, slowEvery: 3, slowest: time.Millisecond,
		},
		{name: "max idle 3", capacity: 4, maxIdle: 3},
		{
			name: "max lifetime and idle timeout", capacity: 4,
			timeout: 10 * time.Millisecond, maxLifetime: 20 * time.Millisecond,
		},
		{
			name: "flaky slow dial context", capacity: 4,
			dialContext: true, failEvery: 5, slowEvery: 4, slowest: 3 * time.Millisecond,
		},
		{
			name: "every limit with a flaky dial", capacity: 3,
			timeout: 15 * time.Millisecond, maxLifetime: 30 * time.Millisecond,
			maxActive: 3, waitTimeout: 5 * time.Millisecond, maxIdle: 4,
			dialContext: true, failEvery: 7, slowEvery: 3, slowest: 2 * time.Millisecond,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newStressDialer(tc)
			dial, opts := tc.options(d)
			r := &stressRun{tc: tc, d: d, p: newPool(t, dial, tc.capacity, tc.timeout, opts...)}
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)

			// Everything but Pool.Close; then, with every conn returned and
			// no Warm running, the counts must match the open sockets.
			r.runWorkers(seed, false)
			r.found.report(t)
			r.checkQuiescent(t)

			// One goroutine closes the pool while the others keep going.
			r.runWorkers(seed+1, true)
			assert.NoError(t, r.closeErr, "the first Pool.Close closes fake conns, which never fail")
			assert.ErrorIs(t, r.secondCloseErr, connpool.ErrClosed, "a second Pool.Close")
			r.found.report(t)
			r.checkClosed(t)
			t.Logf("dials that started while Pool.Close ran: %d without a context that can end, %d with one; "+
				"after it returned: %d and %d", d.duringClose[0].Load(), d.duringClose[1].Load(),
				d.afterClose[0].Load(), d.afterClose[1].Load())
		})
	}
}

// stressDialer makes fake conns, fails or slows some dials on a fixed
// schedule, and keeps per-address books to check the pool's counts against.
type stressDialer struct {
	fake      testnet.FakeDialer
	failEvery int64
	slowEvery int64
	slowest   time.Duration

	addrs map[string]*stressBooks // one per stressAddrs entry; never modified
	conns sync.Map                // socket name ("fake-N") -> *stressConn

	seq       atomic.Int64 // dials started
	inFlight  atomic.Int64
	succeeded atomic.Int64
	failed    atomic.Int64

	// closing is set just before Pool.Close is called, closed once it has
	// returned. Through DialContext, dials that start in either state are
	// counted: [0] those without a context that can end (of Get and New),
	// [1] those with one (the pool's own goroutines).
	closing, closed         atomic.Bool
	duringClose, afterClose [2]atomic.Int64

	afterCloseDials atomic.Int64 // dials of afterCloseAddr
}

// afterCloseAddr is used only by checkouts that begin after Pool.Close has
// returned; none of them may dial.
const afterCloseAddr = "after-close:1"

// stressBooks are the counts of one address.
type stressBooks struct {
	// live counts sockets from the start of their dial until their Close
	// returns, which is what WithMaxActive bounds.
	live, maxLive atomic.Int64
	open          atomic.Int64 // dialed and not yet closed
}

func newStressDialer(tc stressCase) *stressDialer {
	d := &stressDialer{
		failEvery: tc.failEvery,
		slowEvery: tc.slowEvery,
		slowest:   tc.slowest,
		addrs:     make(map[string]*stressBooks),
	}
	for _, addr := range stressAddrs {
		d.addrs[addr] = new(stressBooks)
	}
	return d
}

// Dial is the dial of the predecessor API; it knows no context.
func (d *stressDialer) Dial(address string) (net.Conn, error) {
	return d.dial(context.Background(), address, false)
}

// DialContext is the dial given to WithDialContext.
func (d *stressDialer) DialContext(ctx context.Context, address string) (net.Conn, error) {
	return d.dial(ctx, address, true)
}

func (d *stressDialer) dial(ctx context.Context, address string, withContext bool) (net.Conn, error) {
	if address == afterCloseAddr {
		d.afterCloseDials.Add(1)
		return nil, fmt.Errorf("stress: dial of %s, used only after Pool.Close returned", address)
	}
	books := d.addrs[address]
	if books == nil {
		return nil, fmt.Errorf("stress: dial of unknown address %q", address)
	}
	d.inFlight.Add(1)
	defer d.inFlight.Add(-1)
	if l := books.live.Add(1); l > books.maxLive.Load() {
		for m := books.maxLive.Load(); l > m && !books.maxLive.CompareAndSwap(m, l); m = books.maxLive.Load() {
		}
	}
	if withContext {
		i := 0
		if ctx.Done() != nil {
			i = 1
		}
		switch {
		case d.closed.Load():
			d.afterClose[i].Add(1)
		case d.closing.Load():
			d.duringClose[i].Add(1)
		}
	}
	fail := func(err error) (net.Conn, error) {
		books.live.Add(-1)
		d.failed.Add(1)
		return nil, err
	}

	n := d.seq.Add(1)
	if d.slowEvery > 0 && n%d.slowEvery == 0 {
		// Simulated network latency, not synchronisation.
		t := time.NewTimer(time.Duration(n%7+1) * d.slowest / 7)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fail(ctx.Err())
		}
	}
	if d.failEvery > 0 && n%d.failEvery == 0 {
		return fail(errStressRefused)
	}
	nc, err := d.fake.Dial(address)
	if err != nil {
		return fail(err)
	}
	c := &stressConn{FakeConn: nc.(*testnet.FakeConn), books: books}
	books.open.Add(1)
	d.succeeded.Add(1)
	d.conns.Store(c.LocalAddr().String(), c)
	return c, nil
}

// conn returns the socket named name, or nil if the dialer never made it.
func (d *stressDialer) conn(name string) *stressConn {
	v, ok := d.conns.Load(name)
	if !ok {
		return nil
	}
	return v.(*stressConn)
}

// open returns how many sockets are open, over all addresses.
func (d *stressDialer) open() int64 {
	var n int64
	for _, b := range d.addrs {
		n += b.open.Load()
	}
	return n
}

// stressConn is a fake socket that leaves its address's books when its
// first Close returns.
type stressConn struct {
	*testnet.FakeConn
	books  *stressBooks
	closed atomic.Bool
}

func (c *stressConn) Close() error {
	err := c.FakeConn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.books.open.Add(-1)
		c.books.live.Add(-1)
	}
	return err
}

// findings counts broken invariants by kind and keeps the first example of
// each, so that a broken invariant is reported once, with how often it broke.
type findings struct {
	mu    sync.Mutex // protects the fields below
	n     map[string]int
	first map[string]string
}

func (f *findings) add(kind, format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n, f.first = make(map[string]int), make(map[string]string)
	}
	if f.n[kind] == 0 {
		f.first[kind] = fmt.Sprintf(format, args...)
	}
	f.n[kind]++
}

// report fails t once per kind found so far, and starts afresh.
func (f *findings) report(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	kinds := make([]string, 0, len(f.n))
	for kind := range f.n {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		assert.Fail(t, kind, "%d times; first: %s", f.n[kind], f.first[kind])
	}
	f.n, f.first = nil, nil
}

// stressRun is the state shared by the workers of one subtest.
type stressRun struct {
	tc    stressCase
	p     *connpool.Pool
	d     *stressDialer
	found findings

	// holders maps a socket name to the id+1 of the worker holding it, 0
	// when none does; a worker claims a socket with a compare-and-swap.
	holders sync.Map // string -> *atomic.Int64

	closing atomic.Bool // Pool.Close has been called
	closed  atomic.Bool // Pool.Close has returned

	closeErr, secondCloseErr error
}

// runWorkers runs stressWorkers workers until each has run stressOps
// operations or stressBudget has passed, and waits for them; each returns
// every conn it holds before it stops. With closeMidway, one more goroutine
// closes the pool once two thirds of the operations or of the budget are
// spent, and the workers run stressAfter more operations after that.
func (r *stressRun) runWorkers(seed uint64, closeMidway bool) {
	deadline := time.Now().Add(stressBudget)
	ready := make(chan struct{}) // closed when it is time to close the pool
	var readyOnce sync.Once
	var ops atomic.Int64
	var wg sync.WaitGroup
	for id := range stressWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &stressWorker{id: id, run: r, rng: rand.New(rand.NewPCG(seed, uint64(id)))}
			defer w.returnAll()
			after := 0
			for range stressOps {
				switch {
				case r.closed.Load():
					if after++; after > stressAfter {
						return
					}
				case time.Now().After(deadline):
					return
				case ops.Add(1) >= 2*stressWorkers*stressOps/3:
					readyOnce.Do(func() { close(ready) })
				}
				w.step()
			}
		}()
	}
	if !closeMidway {
		wg.Wait()
		return
	}

	workersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(workersDone)
	}()
	timer := time.NewTimer(2 * stressBudget / 3)
	defer timer.Stop()
	select {
	case <-ready:
	case <-timer.C:
	case <-workersDone:
	}
	// At a cap, close while checkouts wait at it: a slot freed while Close
	// runs is then granted to one of them. Polled, with a deadline.
	for end := time.Now().Add(stressBudget / 4); r.tc.maxActive > 0 && r.p.Stats().Waiting == 0 && time.Now().Before(end); {
		select {
		case <-workersDone:
			end = time.Time{}
		case <-time.After(100 * time.Microsecond):
		}
	}
	r.closing.Store(true)
	r.d.closing.Store(true)
	r.closeErr = r.p.Close()
	r.closed.Store(true)
	r.d.closed.Store(true)
	r.secondCloseErr = r.p.Close()
	ctx := context.Background()
	for _, checkout := range []func() (net.Conn, error){
		func() (net.Conn, error) { return r.p.Get(afterCloseAddr) },
		func() (net.Conn, error) { return r.p.New(afterCloseAddr) },
		func() (net.Conn, error) { return r.p.GetContext(ctx, afterCloseAddr) },
		func() (net.Conn, error) { return r.p.NewContext(ctx, afterCloseAddr) },
	} {
		if c, err := checkout(); !errors.Is(err, connpool.ErrClosed) {
			r.found.add("a checkout begun after Pool.Close returned did not fail with ErrClosed", "got %v, %v", c, err)
		}
	}
	<-workersDone
}

// checkQuiescent checks, with every conn returned and no Warm running, that
// the pool's counts match the sockets the dialer sees open. Dials that
// outlived their callers may still be running at first, the cleaner may be
// closing conns, and an eviction finishes after the lock that chose it is
// released; so it polls until the counts agree.
func (r *stressRun) checkQuiescent(t *testing.T) {
	t.Helper()
	var why string
	eventually(t, func() bool {
		why = r.quiescentMismatch()
		return why == ""
	}, "at a quiescent point: %v", lazyString(func() string { return why }))
}

func (r *stressRun) quiescentMismatch() string {
	if n := r.d.inFlight.Load(); n > 0 {
		return fmt.Sprintf("%d dials still in flight", n)
	}
	s := r.p.Stats()
	var open int64
	for _, addr := range stressAddrs {
		ds := destination(s, addr)
		o := r.d.addrs[addr].open.Load()
		open += o
		switch {
		case ds.Total != o:
			return fmt.Sprintf("%s: Stats().Total is %d but %d fake sockets are open", addr, ds.Total, o)
		case ds.Idle+ds.InUse != ds.Total:
			return fmt.Sprintf("%s: Idle %d + InUse %d != Total %d", addr, ds.Idle, ds.InUse, ds.Total)
		case ds.InUse != 0:
			return fmt.Sprintf("%s: InUse is %d with every conn returned", addr, ds.InUse)
		case ds.Waiting != 0:
			return fmt.Sprintf("%s: Waiting is %d with no checkout running", addr, ds.Waiting)
		case r.tc.maxActive > 0 && ds.Total > int64(r.tc.maxActive):
			return fmt.Sprintf("%s: Total %d over WithMaxActive(%d)", addr, ds.Total, r.tc.maxActive)
		}
	}
	switch {
	case s.Total != open:
		return fmt.Sprintf("pool-wide Stats().Total is %d but %d fake sockets are open", s.Total, open)
	case r.tc.maxIdle > 0 && s.Idle > int64(r.tc.maxIdle):
		return fmt.Sprintf("pool-wide Idle %d over WithMaxIdle(%d)", s.Idle, r.tc.maxIdle)
	case s.Dials != r.d.succeeded.Load() || s.DialErrors != r.d.failed.Load():
		return fmt.Sprintf("Stats counts %d dials and %d dial errors; the dialer saw %d and %d",
			s.Dials, s.DialErrors, r.d.succeeded.Load(), r.d.failed.Load())
	}
	return ""
}

// checkClosed checks, after the pool was closed and every conn returned,
// that every socket was closed exactly once and that the limits held.
func (r *stressRun) checkClosed(t *testing.T) {
	t.Helper()
	eventually(t, func() bool { return r.d.inFlight.Load() == 0 && r.d.open() == 0 },
		"after Pool.Close with every conn returned: %v", lazyString(func() string {
			return fmt.Sprintf("%d dials in flight, %d sockets leaked (open)", r.d.inFlight.Load(), r.d.open())
		}))

	var twice []string
	r.d.conns.Range(func(k, v any) bool {
		if n := v.(*stressConn).Closes.Load(); n != 1 {
			twice = append(twice, fmt.Sprintf("%s closed %d times", k, n))
		}
		return true
	})
	slices.Sort(twice)
	assert.Empty(t, twice, "every dialed socket is closed exactly once")

	s := r.p.Stats()
	assert.Zero(t, s.Total, "Stats().Total after Pool.Close with every conn returned")
	assert.Zero(t, s.Idle, "Stats().Idle after Pool.Close")
	assert.Zero(t, s.InUse, "Stats().InUse after Pool.Close with every conn returned")
	assert.Zero(t, s.Waiting, "Stats().Waiting after Pool.Close")
	assert.Equal(t, r.d.succeeded.Load(), s.Dials, "Stats().Dials against the dialer's successful dials")
	assert.Equal(t, r.d.failed.Load(), s.DialErrors, "Stats().DialErrors against the dialer's failed dials")
	if r.tc.maxActive > 0 {
		for _, addr := range stressAddrs {
			assert.LessOrEqual(t, r.d.addrs[addr].maxLive.Load(), int64(r.tc.maxActive),
				"most sockets to %s at once, from the start of the dial until Close returned, with WithMaxActive(%d)",
				addr, r.tc.maxActive)
		}
	}
	// A checkout decides to dial under its address's lock and dials after
	// letting go of it, so one that decided just before Close began may
	// dial a moment after; only checkouts begun after Close returned are
	// sure to see it.
	assert.Zero(t, r.d.afterCloseDials.Load(), "dials of checkouts begun after Pool.Close returned")
}

// lazyString formats as the string its function returns when formatted.
type lazyString func() string

func (f lazyString) String() string { return f() }

// stressWorker is one goroutine of the stress test.
type stressWorker struct {
	id    int
	run   *stressRun
	rng   *rand.Rand
	held  []net.Conn
	stale []net.Conn // handles already ended with Close or Release
}

// step runs one operation chosen at random.
func (w *stressWorker) step() {
	r := w.run
	addr := stressAddrs[w.rng.IntN(len(stressAddrs))]
	op := w.rng.IntN(100)
	switch {
	case op < 42 && len(w.held) >= stressMaxHeld:
		op = 42 + w.rng.IntN(28) // give back rather than take more
	case op >= 42 && op < 70 && len(w.held) == 0:
		op = w.rng.IntN(42) // nothing to give back: take
	}
	switch {
	case op < 20:
		w.checkout("Get", addr, nil, func() (net.Conn, error) { return r.p.Get(addr) })
	case op < 30:
		w.checkoutContext("GetContext", addr, r.p.GetContext)
	case op < 35:
		w.checkout("New", addr, nil, func() (net.Conn, error) { return r.p.New(addr) })
	case op < 42:
		w.checkoutContext("NewContext", addr, r.p.NewContext)
	case op < 62:
		w.giveBackOne(false)
	case op < 70:
		w.giveBackOne(true)
	case op < 78:
		w.endAgain()
	case op < 84:
		w.warm(addr)
	case op < 87:
		w.drain(addr)
	case op < 95:
		w.stats()
	default:
		w.use()
	}
}

// checkoutContext runs a checkout with a context that is done before the
// call, ends within a millisecond, is cancelled while the call may run, or
// outlives the call.
func (w *stressWorker) checkoutContext(op, addr string, get func(context.Context, string) (net.Conn, error)) {
	var ctx context.Context
	var cancel context.CancelFunc
	switch w.rng.IntN(4) {
	case 0:
		ctx, cancel = context.WithCancel(context.Background())
		cancel()
	case 1:
		ctx, cancel = context.WithTimeout(context.Background(), time.Duration(w.rng.IntN(1000))*time.Microsecond)
	case 2:
		ctx, cancel = context.WithCancel(context.Background())
		stop := time.AfterFunc(time.Duration(w.rng.IntN(1000))*time.Microsecond, cancel)
		defer stop.Stop()
	default:
		ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	}
	defer cancel()
	w.checkout(op, addr, ctx, func() (net.Conn, error) { return get(ctx, addr) })
}

// checkout runs one of Get, GetContext, New and NewContext and checks its
// result; a conn it gets is claimed and held.
func (w *stressWorker) checkout(op, addr string, ctx context.Context, get func() (net.Conn, error)) {
	r := w.run
	doneBefore := ctx != nil && ctx.Err() != nil
	closedBefore := r.closed.Load()
	c, err := get()
	switch {
	case c == nil && err == nil:
		r.found.add(op+" returned neither a conn nor an error", "%s(%s)", op, addr)
	case c == nil:
		if !r.expectedErr(addr, err, ctx, doneBefore, closedBefore) {
			r.found.add(op+" returned an error the API does not document for the case",
				"%s(%s): %v (context done before the call: %t; pool closed before the call: %t)",
				op, addr, err, doneBefore, closedBefore)
		}
	default:
		if doneBefore {
			r.found.add(op+" with a done context returned a conn", "%s(%s) returned %s", op, addr, c.LocalAddr())
		}
		if closedBefore {
			r.found.add(op+" after Pool.Close returned a conn", "%s(%s) returned %s", op, addr, c.LocalAddr())
		}
		w.take(addr, c)
	}
}

// expectedErr reports whether err is a result the API documents for a
// checkout of addr in the circumstances given.
func (r *stressRun) expectedErr(addr string, err error, ctx context.Context, doneBefore, closedBefore bool) bool {
	ctxErr := ctx != nil && ctx.Err() != nil && errors.Is(err, ctx.Err())
	var de *connpool.DialError
	switch {
	case doneBefore:
		return ctxErr
	case closedBefore:
		return ctxErr || errors.Is(err, connpool.ErrClosed)
	case ctxErr:
		return true
	case errors.Is(err, connpool.ErrClosed):
		return r.closing.Load()
	case errors.Is(err, connpool.ErrExhausted):
		return r.tc.waitTimeout > 0
	case errors.As(err, &de):
		// Refusals are scheduled; a dial's context ends only when the
		// pool closes (a caller's cancellation is not passed on).
		return de.Address == addr &&
			(errors.Is(err, errStressRefused) && r.tc.failEvery > 0 ||
				errors.Is(err, context.Canceled) && r.closing.Load())
	}
	return false
}

// take checks a conn just checked out of addr and claims its socket.
func (w *stressWorker) take(addr string, c net.Conn) {
	r := w.run
	w.held = append(w.held, c)
	name := c.LocalAddr().String()
	if pc, ok := c.(*connpool.Conn); !ok || pc.Address() != addr || c.RemoteAddr().String() != addr {
		r.found.add("a checkout returned a conn bound to another address",
			"checkout of %s returned %T %s to %s", addr, c, name, c.RemoteAddr())
	}
	switch sc := r.d.conn(name); {
	case sc == nil:
		r.found.add("a checkout returned a socket the dialer never made", "socket %s", name)
	case sc.Closes.Load() > 0:
		r.found.add("a checkout handed out a closed socket", "socket %s of %s, closed %d times",
			name, addr, sc.Closes.Load())
	}
	v, _ := r.holders.LoadOrStore(name, new(atomic.Int64))
	if h := v.(*atomic.Int64); !h.CompareAndSwap(0, int64(w.id)+1) {
		r.found.add("a socket was held by two callers at once",
			"socket %s of %s handed to worker %d while worker %d held it", name, addr, w.id, h.Load()-1)
	}
}

// giveBackOne ends one held conn with Close, or with Release.
func (w *stressWorker) giveBackOne(release bool) {
	i := w.rng.IntN(len(w.held))
	c := w.held[i]
	w.held = slices.Delete(w.held, i, i+1)
	w.end(c, release)
}

// returnAll ends every held conn, so that the checks after a phase find
// nothing in use.
func (w *stressWorker) returnAll() {
	for len(w.held) > 0 {
		w.giveBackOne(w.rng.IntN(4) == 0)
	}
}

// end unclaims c's socket and then ends the handle; the socket may be handed
// to another caller the moment Close runs.
func (w *stressWorker) end(c net.Conn, release bool) {
	r := w.run
	if v, ok := r.holders.Load(c.LocalAddr().String()); ok {
		v.(*atomic.Int64).Store(0)
	}
	op, err := "Close", error(nil)
	if release {
		op, err = "Release", c.(*connpool.Conn).Release()
	} else {
		err = c.Close()
	}
	if err != nil {
		r.found.add("the first "+op+" of a handle failed", "%s of %s: %v", op, c.LocalAddr(), err)
	}
	w.stale = append(w.stale, c)
	if len(w.stale) > stressStale {
		w.stale = w.stale[1:]
	}
}

// endAgain misuses an ended handle: Close, Release and I/O must all return
// ErrConnClosed and change nothing.
func (w *stressWorker) endAgain() {
	if len(w.stale) == 0 {
		w.stats()
		return
	}
	r := w.run
	c := w.stale[w.rng.IntN(len(w.stale))]
	if err := c.Close(); !errors.Is(err, connpool.ErrConnClosed) {
		r.found.add("a second Close did not return ErrConnClosed", "Close of %s: %v", c.LocalAddr(), err)
	}
	if err := c.(*connpool.Conn).Release(); !errors.Is(err, connpool.ErrConnClosed) {
		r.found.add("a second Release did not return ErrConnClosed", "Release of %s: %v", c.LocalAddr(), err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, connpool.ErrConnClosed) {
		r.found.add("Write on an ended handle did not return ErrConnClosed", "Write to %s: %v", c.LocalAddr(), err)
	}
}

// use does I/O on a held conn: its socket must still be open.
func (w *stressWorker) use() {
	if len(w.held) == 0 {
		w.stats()
		return
	}
	c := w.held[w.rng.IntN(len(w.held))]
	if _, err := c.Write([]byte("ping")); err != nil {
		w.run.found.add("I/O on a held conn failed", "Write to %s: %v", c.LocalAddr(), err)
	}
	if _, err := c.Read(make([]byte, 4)); err != nil {
		w.run.found.add("I/O on a held conn failed", "Read from %s: %v", c.LocalAddr(), err)
	}
}

// warm runs Warm with a context that ends within two milliseconds, so it
// often returns while its dials go on.
func (w *stressWorker) warm(addr string) {
	r := w.run
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(w.rng.IntN(2000))*time.Microsecond)
	defer cancel()
	n := 1 + w.rng.IntN(4)
	closedBefore := r.closed.Load()
	err := r.p.Warm(ctx, addr, n)
	ok := eachError(err, func(err error) bool {
		var de *connpool.DialError
		switch {
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return true
		case closedBefore:
			return errors.Is(err, connpool.ErrClosed)
		case errors.Is(err, connpool.ErrClosed):
			return r.closing.Load()
		case errors.As(err, &de):
			return de.Address == addr &&
				(errors.Is(err, errStressRefused) && r.tc.failEvery > 0 ||
					errors.Is(err, context.Canceled) && r.closing.Load())
		}
		return false
	})
	if !ok || closedBefore && err == nil {
		r.found.add("Warm returned an error the API does not document for the case",
			"Warm(%s, %d): %v (pool closed before the call: %t)", addr, n, err, closedBefore)
	}
}

// eachError reports whether ok holds for err, or for every error err
// combines.
func eachError(err error, ok func(error) bool) bool {
	if err == nil {
		return true
	}
	var me *multierror.Error
	if errors.As(err, &me) {
		for _, e := range me.Errors {
			if !eachError(e, ok) {
				return false
			}
		}
		return true
	}
	return ok(err)
}

// drain drains addr, which may have conns in use, dials in flight, Warm
// running and checkouts waiting.
func (w *stressWorker) drain(addr string) {
	r := w.run
	closedBefore := r.closed.Load()
	err := r.p.Drain(addr)
	switch {
	case closedBefore && !errors.Is(err, connpool.ErrClosed):
		r.found.add("Drain after Pool.Close did not return ErrClosed", "Drain(%s): %v", addr, err)
	case err != nil && !(errors.Is(err, connpool.ErrClosed) && r.closing.Load()):
		r.found.add("Drain failed", "Drain(%s): %v", addr, err)
	}
}

// stats checks that a snapshot is consistent in itself.
func (w *stressWorker) stats() {
	r := w.run
	s := r.p.Stats()
	var sum connpool.DestinationStats
	var addrs []string
	for _, d := range s.Destinations {
		addrs = append(addrs, d.Address)
		if d.Idle < 0 || d.InUse < 0 || d.Waiting < 0 || d.Idle+d.InUse != d.Total {
			r.found.add("Stats of an address are inconsistent", "%s", d)
		}
		if d.Idle > int64(r.tc.capacity) {
			r.found.add("an address has more idle conns than its capacity", "%s, capacity %d", d, r.tc.capacity)
		}
		if !slices.Contains(stressAddrs, d.Address) {
			r.found.add("Stats lists an address never used", "%s", d.Address)
		}
		sum.Total += d.Total
		sum.Idle += d.Idle
		sum.InUse += d.InUse
		sum.Waiting += d.Waiting
	}
	if !slices.IsSorted(addrs) || len(slices.Compact(slices.Clone(addrs))) != len(addrs) {
		r.found.add("Stats destinations are not sorted and unique", "%s", strings.Join(addrs, ", "))
	}
	if s.Total != sum.Total || s.Idle != sum.Idle || s.InUse != sum.InUse || s.Waiting != sum.Waiting {
		r.found.add("pool-wide Stats differ from the sum over addresses",
			"pool %d/%d/%d/%d, sum %d/%d/%d/%d (total/idle/in use/waiting)",
			s.Total, s.Idle, s.InUse, s.Waiting, sum.Total, sum.Idle, sum.InUse, sum.Waiting)
	}
}
