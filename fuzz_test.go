package connpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// The pool FuzzPool drives has a capacity of 2 and a one-minute idle
// timeout on a fake clock; the first byte of an input chooses its other
// options (see decodeFuzzConfig).
const (
	fuzzCapacity = 2
	fuzzTimeout  = time.Minute
)

var fuzzAddrs = []string{"a:1", "b:1", "c:1"}

// fuzzConfig is the option set of one FuzzPool input.
type fuzzConfig struct {
	maxActive   int           // WithMaxActive: 0, 2 or 3
	maxIdle     int           // WithMaxIdle: 0 or 3
	lifetime    time.Duration // WithMaxLifetime: 0 or 2 minutes
	waitTimeout time.Duration // WithWaitTimeout: 0 or 1ns
}

// decodeFuzzConfig maps a byte onto the 24 option sets FuzzPool covers.
func decodeFuzzConfig(b byte) fuzzConfig {
	o := int(b) % 24
	return fuzzConfig{
		maxActive:   []int{0, 2, 3}[o%3],
		maxIdle:     []int{0, 3}[o/3%2],
		lifetime:    []time.Duration{0, 2 * time.Minute}[o/6%2],
		waitTimeout: []time.Duration{0, time.Nanosecond}[o/12],
	}
}

// fuzzConfigByte is the first input byte that selects an option set; the
// arguments are indexes into the value lists of decodeFuzzConfig.
func fuzzConfigByte(maxActive, maxIdle, lifetime, waitTimeout int) byte {
	return byte(maxActive + 3*maxIdle + 6*lifetime + 12*waitTimeout)
}

// The operations of a FuzzPool input: every byte after the first is one
// step, b%16 the operation and b/16 (0 to 15) its argument. Frequent
// operations have several codes.
const (
	fopGet       = 0  // also 1 and 13; arg: address arg%3, call variant arg/3%3
	fopNew       = 2  // also 15; arg as for fopGet
	fopClose     = 3  // also 4 and 14: return the conn in use at index arg
	fopRelease   = 5  // release the conn in use at index arg
	fopEnded     = 6  // Close (even arg) or Release (odd) an ended handle
	fopTime      = 7  // the clock advances by arg² seconds
	fopSweep     = 8  // the cleaner sweeps at the current clock reading
	fopPoolClose = 9  // Pool.Close, when arg%4 == 0
	fopDrain     = 10 // Drain address arg%3
	fopWarm      = 11 // Warm address arg%3 with n = arg/3
	fopCancelled = 12 // GetContext, NewContext or Warm (arg/3%3) with a cancelled ctx
	fopGet2      = 13
	fopClose2    = 14
	fopNew2      = 15
)

// fuzzStepLimit bounds the bytes of an input FuzzPool runs.
const fuzzStepLimit = 512

// Call variants of a checkout (arg/3%3 of fopGet and fopNew).
const (
	variantPlain    = 0 // Get or New
	variantLiveCtx  = 1 // GetContext or NewContext with a ctx that never ends
	variantExpiring = 2 // with an expiringCtx where the model says it waits for good
)

// fuzzStep encodes one step of a FuzzPool input.
func fuzzStep(op, arg int) byte { return byte(op + 16*arg) }

// FuzzPool decodes its input as pool operations, runs them on one goroutine
// against a pool on a fake clock and against a model of the pool, and checks
// after every step that the two agree: counts, counters, open sockets, the
// idle stacks with their stamps, the idle LRU, and which conn each checkout
// hands out. The seed corpus in testdata/fuzz/FuzzPool runs as a normal
// test.
func FuzzPool(f *testing.F) {
	// Inputs from before the option byte existed; they still run.
	f.Add([]byte{0, 2, 0, 8, 16, 2, 10, 3, 4, 5})
	f.Add([]byte{0, 0, 0, 2, 2, 2, 0, 253, 0, 6, 7, 2, 0})
	f.Add([]byte{8, 16, 10, 18, 61, 6, 8, 3, 4, 7, 8, 2})

	s := fuzzStep
	// WithMaxActive(2): a third checkout waits for good (an expiring ctx,
	// then plain Get and New through the same path); a returned conn is
	// reused; New at the cap retires the oldest idle conn and dials.
	f.Add([]byte{fuzzConfigByte(1, 0, 0, 0),
		s(fopGet, 0), s(fopGet, 0), s(fopGet, 0), s(fopGet, 3), s(fopNew, 6), s(fopNew, 3),
		s(fopClose, 0), s(fopGet, 0), s(fopClose, 1), s(fopClose, 0), s(fopNew, 0), s(fopNew, 3),
		s(fopTime, 8), s(fopGet, 0), s(fopClose, 0), s(fopTime, 8), s(fopGet, 3), s(fopSweep, 0)})
	// Idle for 59s, then for exactly the timeout: reused, then discarded
	// by Get; then by the cleaner at exactly the timeout.
	f.Add([]byte{fuzzConfigByte(0, 0, 0, 0),
		s(fopGet, 0), s(fopClose, 0), s(fopTime, 6), s(fopTime, 4), s(fopTime, 2), s(fopTime, 1),
		s(fopTime, 1), s(fopTime, 1), s(fopGet, 0), s(fopClose, 0), s(fopTime, 6), s(fopTime, 4),
		s(fopTime, 2), s(fopTime, 2), s(fopGet, 0), s(fopClose, 0), s(fopTime, 6), s(fopTime, 4),
		s(fopTime, 2), s(fopTime, 2), s(fopSweep, 0)})
	// WithMaxActive(2) and a 1ns wait timeout: waits end in ErrExhausted.
	f.Add([]byte{fuzzConfigByte(1, 0, 0, 1),
		s(fopGet, 1), s(fopNew, 1), s(fopGet, 1), s(fopNew, 4), s(fopGet, 7), s(fopClose, 0),
		s(fopNew, 1), s(fopClose, 0), s(fopTime, 8), s(fopGet, 1), s(fopRelease, 0)})
	// Drain with conns idle and in use, then Warm and the cleaner.
	f.Add([]byte{fuzzConfigByte(2, 0, 0, 0),
		s(fopGet, 0), s(fopGet, 0), s(fopGet, 0), s(fopClose, 0), s(fopDrain, 0), s(fopGet, 0),
		s(fopGet, 0), s(fopClose, 0), s(fopClose, 0), s(fopClose, 0), s(fopWarm, 6), s(fopWarm, 6),
		s(fopDrain, 1), s(fopTime, 9), s(fopSweep, 0), s(fopWarm, 3), s(fopGet, 0)})
	// WithMaxIdle(3) across three addresses: LRU eviction on Close and on
	// Warm, which may dial again after evicting a conn of its own address.
	f.Add([]byte{fuzzConfigByte(0, 1, 0, 0),
		s(fopGet, 0), s(fopGet, 1), s(fopGet, 1), s(fopGet, 2), s(fopClose, 0), s(fopClose, 0),
		s(fopClose, 0), s(fopTime, 1), s(fopClose, 0), s(fopWarm, 6), s(fopWarm, 7), s(fopWarm, 8),
		s(fopGet, 0), s(fopGet, 1), s(fopSweep, 0)})
	// WithMaxIdle(3) with WithMaxActive(2): Warm's dials are bounded by
	// free slots, and an eviction in its own address frees one.
	f.Add([]byte{fuzzConfigByte(1, 1, 0, 0),
		s(fopGet, 0), s(fopClose, 0), s(fopTime, 1), s(fopGet, 1), s(fopGet, 1), s(fopClose, 0),
		s(fopClose, 0), s(fopWarm, 6), s(fopNew, 0), s(fopNew, 0), s(fopNew, 0)})
	// WithMaxLifetime: conns retire at Get, on Close and in the sweep.
	f.Add([]byte{fuzzConfigByte(0, 0, 1, 0),
		s(fopGet, 0), s(fopGet, 0), s(fopClose, 0), s(fopTime, 7), s(fopClose, 0), s(fopTime, 7),
		s(fopGet, 0), s(fopTime, 4), s(fopGet, 0), s(fopClose, 1), s(fopTime, 7), s(fopClose, 0),
		s(fopWarm, 6), s(fopTime, 10), s(fopSweep, 0), s(fopTime, 1), s(fopSweep, 0)})
	// Every option at once, cancelled contexts, and Pool.Close.
	f.Add([]byte{fuzzConfigByte(2, 1, 1, 1),
		s(fopCancelled, 0), s(fopCancelled, 3), s(fopCancelled, 6), s(fopGet, 0), s(fopGet, 0),
		s(fopNew, 0), s(fopGet, 8), s(fopClose, 0), s(fopDrain, 0), s(fopWarm, 15),
		s(fopPoolClose, 0), s(fopCancelled, 0), s(fopGet, 0), s(fopWarm, 3), s(fopDrain, 0),
		s(fopClose, 0), s(fopEnded, 0), s(fopSweep, 0), s(fopPoolClose, 0)})

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > fuzzStepLimit {
			in = in[:fuzzStepLimit]
		}
		var cfg fuzzConfig
		var ops []byte
		if len(in) > 0 {
			cfg, ops = decodeFuzzConfig(in[0]), in[1:]
		}
		var d testnet.FakeDialer
		clock := new(fakeClock)
		clock.advance(time.Hour)
		p, err := New(d.Dial, fuzzCapacity, fuzzTimeout, withClock(clock),
			WithMaxActive(cfg.maxActive), WithMaxIdle(cfg.maxIdle),
			WithMaxLifetime(cfg.lifetime), WithWaitTimeout(cfg.waitTimeout))
		if err != nil {
			t.Fatal(err)
		}
		m := &model{
			fuzzConfig: cfg, now: clock.read(),
			idle: map[string][]modelIdle{}, bnow: map[string]int64{}, open: map[int64]string{},
		}

		// A checkout the model expects to return but that waits for good
		// would hang the fuzzer; fail loudly instead.
		var step atomic.Int64
		watchdog := time.AfterFunc(30*time.Second, func() {
			panic(fmt.Sprintf("FuzzPool: step %d of input %q has not returned for 30s: "+
				"the pool waits where the model expects it to go on", step.Load(), in))
		})
		defer watchdog.Stop()

		for i, b := range ops {
			step.Store(int64(i))
			op, arg := int(b%16), int(b/16)
			if err := m.apply(p, clock, &d, op, arg); err != nil {
				t.Fatalf("options %+v, step %d (op %d, arg %d): %v", cfg, i, op, arg, err)
			}
			p.closers.Wait() // conns a checkout discarded are closed in the background
			if err := m.check(p, &d); err != nil {
				t.Fatalf("options %+v, after step %d (op %d, arg %d): %v", cfg, i, op, arg, err)
			}
		}
		for _, h := range m.inUse {
			h.c.Close()
		}
		if err := p.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
		if n := d.Open(); n != 0 {
			t.Fatalf("%d conns leaked after Close", n)
		}
	})
}

// model is what the pool must hold, kept in the simplest way: per address
// a stack of idle conns with their idle stamps and lifetime deadlines and
// the latest clock reading the pool took for the address, the conns in use,
// the pool-wide LRU order of idle conns, and the expected counters.
//
// Conn IDs are the fake dialer's, which numbers dials from 1; every dial
// but Warm's happens on the fuzz goroutine, so the model predicts them.
type model struct {
	fuzzConfig
	now      int64
	idle     map[string][]modelIdle
	bnow     map[string]int64 // the addresses that have a bucket, and its clock
	lru      []int64          // with WithMaxIdle: idle conn IDs, least recently returned first
	inUse    []modelHandle
	ended    []*Conn
	open     map[int64]string // open sockets: conn ID to address
	nextID   int64            // the dials so far
	closed   bool
	counters Counters // pool-wide, WaitDuration left at zero
}

type modelIdle struct {
	id       int64
	since    int64 // the idle stamp: the bucket's clock when the conn came back
	deadline int64 // with WithMaxLifetime; else 0
}

type modelHandle struct {
	c        *Conn
	id       int64
	addr     string
	deadline int64
	drained  bool // Drain ran for addr while this conn was in use
}

// planKind is what a checkout does, as the model predicts it.
type planKind int

const (
	planHit         planKind = iota // hands out an idle conn
	planDial                        // dials at once
	planWait                        // waits until the conns it discarded are closed, then dials
	planWaitForever                 // waits for a conn or a slot that nothing will free
)

// checkoutPlan is the model's prediction for one checkout.
type checkoutPlan struct {
	kind     planKind
	hit      modelIdle      // with planHit
	discards []modelDiscard // idle conns the checkout takes out of service
}

type modelDiscard struct {
	id     int64
	reason *int64 // a field of model.counters
}

// expiringCtx is a context that is not done when GetContext or NewContext
// checks it on entry, and is done from the first call of Done on: a
// checkout that waits on it gives up at once. The model uses it only where
// nothing could wake the waiter, so the outcome is not a race.
type expiringCtx struct {
	context.Context
	cancel context.CancelFunc
}

func (c expiringCtx) Done() <-chan struct{} {
	c.cancel()
	return c.Context.Done()
}

func fakeID(v io.Closer) int64 { return v.(*testnet.FakeConn).ID }

func (m *model) apply(p *Pool, clock *fakeClock, d *testnet.FakeDialer, op, arg int) error {
	addr := fuzzAddrs[arg%len(fuzzAddrs)]
	switch op {
	case fopGet, 1, fopGet2:
		return m.checkout(p, addr, false, arg/3%3)
	case fopNew, fopNew2:
		return m.checkout(p, addr, true, arg/3%3)
	case fopClose, 4, fopClose2, fopRelease:
		if len(m.inUse) == 0 {
			return nil
		}
		i := arg % len(m.inUse)
		h := m.inUse[i]
		m.inUse = slices.Delete(m.inUse, i, i+1)
		m.ended = append(m.ended, h.c)
		if op == fopRelease {
			m.closeConn(h.id, &m.counters.Released)
			return h.c.Release()
		}
		m.put(h)
		return h.c.Close()
	case fopEnded:
		if len(m.ended) == 0 {
			return nil
		}
		c := m.ended[arg%len(m.ended)]
		var err error
		if arg%2 == 0 {
			err = c.Close()
		} else {
			err = c.Release()
		}
		if !errors.Is(err, ErrConnClosed) {
			return fmt.Errorf("second close of an ended handle: %v", err)
		}
	case fopTime:
		clock.advance(time.Duration(arg*arg) * time.Second)
		m.now = clock.read()
	case fopSweep:
		p.sweep(m.now)
		m.sweep()
	case fopPoolClose:
		if arg%4 != 0 {
			return nil
		}
		err := p.Close()
		if m.closed != errors.Is(err, ErrClosed) || (!m.closed && err != nil) {
			return fmt.Errorf("Close: %v", err)
		}
		m.closed = true
		for addr, stack := range m.idle {
			for _, ic := range stack {
				m.closeConn(ic.id, nil)
			}
			m.idle[addr] = nil
		}
		m.lru = nil
	case fopDrain:
		return m.drain(p, addr)
	case fopWarm:
		return m.warm(p, d, addr, arg/3)
	case fopCancelled:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var err error
		switch arg / 3 % 3 {
		case 0:
			var nc net.Conn
			nc, err = p.GetContext(ctx, addr)
			if nc != nil {
				return fmt.Errorf("GetContext with a cancelled ctx returned a conn")
			}
		case 1:
			var nc net.Conn
			nc, err = p.NewContext(ctx, addr)
			if nc != nil {
				return fmt.Errorf("NewContext with a cancelled ctx returned a conn")
			}
		case 2:
			err = p.Warm(ctx, addr, arg/3)
		}
		if err != context.Canceled {
			return fmt.Errorf("with a cancelled ctx: %v, want context.Canceled", err)
		}
	}
	return nil
}

// checkout runs Get or New (fresh) for addr in the given call variant and
// checks what it did against the model's plan.
func (m *model) checkout(p *Pool, addr string, fresh bool, variant int) error {
	name := "Get"
	if fresh {
		name = "New"
	}
	var pl checkoutPlan
	if !m.closed {
		if fresh {
			pl = m.planNew(addr)
		} else {
			pl = m.planGet(addr)
		}
	}
	var ctx context.Context // nil: Get or New
	switch {
	case pl.kind == planWaitForever && (variant == variantExpiring || m.waitTimeout == 0):
		// Get or New would block for good: ask with a ctx that ends once waiting.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(context.Background())
		defer cancel()
		ctx = expiringCtx{ctx, cancel}
	case variant == variantLiveCtx:
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(context.Background())
		defer cancel()
	case variant == variantExpiring:
		ctx = context.Background()
	}
	var nc net.Conn
	var err error
	switch {
	case ctx == nil && fresh:
		nc, err = p.New(addr)
	case ctx == nil:
		nc, err = p.Get(addr)
	case fresh:
		nc, err = p.NewContext(ctx, addr)
	default:
		nc, err = p.GetContext(ctx, addr)
	}
	if m.closed {
		if nc != nil || !errors.Is(err, ErrClosed) {
			return fmt.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
		return nil
	}

	m.touch(addr)
	if pl.kind == planWait || pl.kind == planWaitForever {
		m.counters.WaitCount++
	}
	m.discardIdle(addr, pl.discards)
	switch pl.kind {
	case planWaitForever:
		_, expiring := ctx.(expiringCtx)
		switch {
		case nc != nil:
			return fmt.Errorf("%s(%s) handed out %s; the model has the address at its cap with nothing idle",
				name, addr, nc.LocalAddr())
		case errors.Is(err, ErrExhausted) && m.waitTimeout > 0:
		case errors.Is(err, context.Canceled) && expiring:
		default:
			return fmt.Errorf("%s(%s) at the cap: %v, want it to wait and give up", name, addr, err)
		}
		return nil
	case planWait:
		// It waits for the background close of what it discarded; with a
		// wait timeout it may give up first.
		if err != nil && m.waitTimeout > 0 && errors.Is(err, ErrExhausted) {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("%s(%s): %v", name, addr, err)
	}
	h := nc.(*Conn)
	if h.Address() != addr {
		return fmt.Errorf("%s(%s) gave a conn of %s", name, addr, h.Address())
	}
	mh := modelHandle{c: h, addr: addr}
	if pl.kind == planHit {
		ic := pl.hit
		if got := fakeID(h.load().v); got != ic.id {
			return fmt.Errorf("%s(%s) gave conn %d, want idle conn %d", name, addr, got, ic.id)
		}
		if !h.Reused() || h.IdleTime() != time.Duration(m.now-ic.since) {
			return fmt.Errorf("%s(%s) conn %d: reused %v idle %v, want reused, idle %v",
				name, addr, ic.id, h.Reused(), h.IdleTime(), time.Duration(m.now-ic.since))
		}
		if got := h.load().deadline; got != ic.deadline {
			return fmt.Errorf("conn %d: lifetime deadline %d, model %d", ic.id, got, ic.deadline)
		}
		m.removeIdle(addr, ic.id)
		m.counters.Reuses++
		mh.id, mh.deadline = ic.id, ic.deadline
	} else {
		id, err := m.dialed(addr, h.load())
		if err != nil {
			return fmt.Errorf("%s(%s): %v", name, addr, err)
		}
		if h.Reused() || h.IdleTime() != 0 {
			return fmt.Errorf("%s(%s): dialed conn %d is marked reused", name, addr, id)
		}
		mh.id, mh.deadline = id, h.load().deadline
	}
	m.inUse = append(m.inUse, mh)
	return nil
}

// planGet predicts a Get: it pops the newest idle conn usable now,
// discarding the unusable ones above it; else it dials if a slot is free,
// counting the discarded conns until their close returns.
func (m *model) planGet(addr string) checkoutPlan {
	var pl checkoutPlan
	stack := m.idle[addr]
	for i := len(stack) - 1; i >= 0; i-- {
		ic := stack[i]
		switch {
		case m.now-ic.since >= int64(fuzzTimeout):
			pl.discards = append(pl.discards, modelDiscard{ic.id, &m.counters.ClosedIdleTimeout})
		case ic.deadline != 0 && m.now >= ic.deadline:
			pl.discards = append(pl.discards, modelDiscard{ic.id, &m.counters.ClosedMaxLifetime})
		default:
			pl.kind, pl.hit = planHit, ic
			return pl
		}
	}
	pl.kind = m.slotPlan(m.inUseAt(addr)+len(pl.discards), len(pl.discards) > 0)
	return pl
}

// planNew predicts a New: it dials if a slot is free; at the cap it
// retires the oldest idle conn and waits for its close.
func (m *model) planNew(addr string) checkoutPlan {
	stack := m.idle[addr]
	pl := checkoutPlan{kind: m.slotPlan(m.inUseAt(addr)+len(stack), len(stack) > 0)}
	if pl.kind == planWait {
		pl.discards = []modelDiscard{{stack[0].id, &m.counters.ClosedForNew}}
	}
	return pl
}

// slotPlan says what a checkout that found no idle conn to use does, with
// used sockets of the address counting against the cap, some of them
// being closed if freeing.
func (m *model) slotPlan(used int, freeing bool) planKind {
	switch {
	case m.maxActive == 0 || used < m.maxActive:
		return planDial
	case freeing:
		return planWait
	default:
		return planWaitForever
	}
}

// dialed records a conn the pool dialed for addr at the current clock
// reading and checks that it is the next one the dialer made.
func (m *model) dialed(addr string, pc *pconn) (int64, error) {
	m.nextID++
	if got := fakeID(pc.v); got != m.nextID {
		return 0, fmt.Errorf("dialed conn %d, want %d", got, m.nextID)
	}
	if err := m.checkDeadline(m.nextID, pc.deadline); err != nil {
		return 0, err
	}
	m.open[m.nextID] = addr
	m.counters.Dials++
	m.touch(addr)
	return m.nextID, nil
}

// checkDeadline checks the lifetime deadline of a conn dialed now: none
// without WithMaxLifetime, else the lifetime shortened by up to 10%.
func (m *model) checkDeadline(id, deadline int64) error {
	l := int64(m.lifetime)
	if (l == 0 && deadline != 0) || (l != 0 && (deadline > m.now+l || deadline < m.now+l-l/10)) {
		return fmt.Errorf("conn %d dialed at %d has lifetime deadline %d (max lifetime %v)",
			id, m.now, deadline, m.lifetime)
	}
	return nil
}

// put is the Close of a conn in use: it is closed, or it goes on the idle
// stack of its address, evicting the least recently returned idle conn of
// the pool past WithMaxIdle.
func (m *model) put(h modelHandle) {
	m.touch(h.addr) // Close reads the coarse clock, which the fake clock keeps exact
	switch {
	case m.closed:
		m.closeConn(h.id, nil)
	case h.drained:
		m.closeConn(h.id, &m.counters.ClosedDrained)
	case m.lifetime > 0 && m.bnow[h.addr] >= h.deadline:
		m.closeConn(h.id, &m.counters.ClosedMaxLifetime)
	case len(m.idle[h.addr]) >= fuzzCapacity:
		m.closeConn(h.id, &m.counters.ClosedBucketFull)
	default:
		m.push(h.addr, h.id, h.deadline)
	}
}

// push puts a conn on the idle stack of addr, stamped with the bucket's
// clock, and evicts the pool's least recently returned idle conn if that
// exceeds WithMaxIdle.
func (m *model) push(addr string, id, deadline int64) {
	m.idle[addr] = append(m.idle[addr], modelIdle{id: id, since: m.bnow[addr], deadline: deadline})
	if m.maxIdle == 0 {
		return
	}
	m.lru = append(m.lru, id)
	if len(m.lru) > m.maxIdle {
		victim := m.lru[0]
		m.removeIdle(m.open[victim], victim)
		m.closeConn(victim, &m.counters.ClosedIdleCapEvicted)
	}
}

// removeIdle takes conn id off the idle stack of addr and the LRU.
func (m *model) removeIdle(addr string, id int64) {
	m.idle[addr] = slices.DeleteFunc(m.idle[addr], func(ic modelIdle) bool { return ic.id == id })
	m.lru = slices.DeleteFunc(m.lru, func(x int64) bool { return x == id })
}

// discardIdle takes idle conns of addr out of service and closes them.
func (m *model) discardIdle(addr string, discards []modelDiscard) {
	for _, d := range discards {
		m.removeIdle(addr, d.id)
		m.closeConn(d.id, d.reason)
	}
}

// closeConn records that the socket of conn id is closed, counting why.
func (m *model) closeConn(id int64, reason *int64) {
	delete(m.open, id)
	if reason != nil {
		*reason++
	}
}

// touch records a clock reading the pool takes for addr, creating its
// bucket if needed.
func (m *model) touch(addr string) {
	m.bnow[addr] = max(m.bnow[addr], m.now)
}

func (m *model) inUseAt(addr string) int {
	n := 0
	for _, h := range m.inUse {
		if h.addr == addr {
			n++
		}
	}
	return n
}

// sweep is the cleaner's step at the current clock reading: it closes idle
// conns past the timeout or their lifetime and forgets empty buckets.
func (m *model) sweep() {
	for addr := range m.bnow {
		m.touch(addr)
		var expired []modelDiscard
		for _, ic := range m.idle[addr] {
			switch {
			case m.now-ic.since >= int64(fuzzTimeout):
				expired = append(expired, modelDiscard{ic.id, &m.counters.ClosedIdleTimeout})
			case ic.deadline != 0 && m.now >= ic.deadline:
				expired = append(expired, modelDiscard{ic.id, &m.counters.ClosedMaxLifetime})
			}
		}
		m.discardIdle(addr, expired)
		if len(m.idle[addr]) == 0 && m.inUseAt(addr) == 0 {
			delete(m.bnow, addr)
			delete(m.idle, addr)
		}
	}
}

// drain runs Pool.Drain: idle conns of addr close now, the ones in use
// when they come back.
func (m *model) drain(p *Pool, addr string) error {
	err := p.Drain(addr)
	if m.closed {
		if !errors.Is(err, ErrClosed) {
			return fmt.Errorf("Drain after Close: %v, want ErrClosed", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("Drain(%s): %v", addr, err)
	}
	for _, ic := range m.idle[addr] {
		m.lru = slices.DeleteFunc(m.lru, func(x int64) bool { return x == ic.id })
		m.closeConn(ic.id, &m.counters.ClosedDrained)
	}
	m.idle[addr] = nil
	for i := range m.inUse {
		if m.inUse[i].addr == addr {
			m.inUse[i].drained = true
		}
	}
	return nil
}

// warm runs Pool.Warm(addr, n). Its dials run in parallel, so two things
// are not determined: the order in which its conns reach the idle stack,
// which the model reads from the pool, and, with WithMaxIdle, how many it
// dials: when a warm conn evicts an idle conn of the same address, a
// reservation made after that completes sees room for one more. The model
// bounds the count between all reservations made before any dial completes
// and each dial completing before the next reservation, and then checks
// the pool's outcome as that many dials completing one after another.
func (m *model) warm(p *Pool, d *testnet.FakeDialer, addr string, n int) error {
	before := d.Dials()
	err := p.Warm(context.Background(), addr, n)
	if m.closed {
		if !errors.Is(err, ErrClosed) {
			return fmt.Errorf("Warm after Close: %v, want ErrClosed", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("Warm(%s, %d): %v", addr, n, err)
	}
	target := min(n, fuzzCapacity)
	if m.maxActive > 0 {
		target = min(target, m.maxActive)
	}
	if _, ok := m.bnow[addr]; !ok {
		// Warm looks the bucket up, which makes it if needed. With nothing
		// to dial it may find the bucket the cleaner dropped still in the
		// registry's snapshot, and then makes none: it is empty either way.
		p.buckets.mu.Lock()
		made := p.buckets.getLocked(addr) != nil
		p.buckets.mu.Unlock()
		if made || target > 0 {
			m.bnow[addr] = 0
		}
	}
	lo, hi := m.warmDials(addr, target, false), m.warmDials(addr, target, true)
	k := int(d.Dials() - before)
	if k < lo || k > hi {
		return fmt.Errorf("Warm(%s, %d) dialed %d conns, want %d to %d", addr, n, k, lo, hi)
	}
	if k == 0 {
		return nil
	}

	// The warm conns are the top k of the stack, in the order they came.
	p.buckets.mu.Lock()
	b := p.buckets.getLocked(addr)
	p.buckets.mu.Unlock()
	if b == nil {
		return fmt.Errorf("Warm(%s, %d) dialed %d conns and left no bucket", addr, n, k)
	}
	b.mu.Lock()
	top := slices.Clone(b.idleCopyLocked()[max(0, len(b.idleCopyLocked())-k):])
	b.mu.Unlock()
	got := make([]int64, len(top))
	for i, ic := range top {
		got[i] = fakeID(ic.pc.v)
	}
	sorted := slices.Sorted(slices.Values(got))
	for i := range k {
		if len(sorted) != k || sorted[i] != m.nextID+1+int64(i) {
			return fmt.Errorf("Warm(%s, %d): top of the idle stack %v, want conns %d to %d",
				addr, n, got, m.nextID+1, m.nextID+int64(k))
		}
	}
	for _, ic := range top {
		id := fakeID(ic.pc.v)
		if err := m.checkDeadline(id, ic.pc.deadline); err != nil {
			return err
		}
		m.open[id] = addr
		m.counters.Dials++
		m.touch(addr)
		m.push(addr, id, ic.pc.deadline)
	}
	m.nextID += int64(k)
	return nil
}

// warmDials counts the dials Warm makes for addr with the given target
// when every dial completes before the next reservation (seq), or when
// none completes before Warm stops reserving.
func (m *model) warmDials(addr string, target int, seq bool) int {
	idle, inUse, lru := len(m.idle[addr]), m.inUseAt(addr), slices.Clone(m.lru)
	k, warming := 0, 0
	for range target {
		if idle+warming >= target || (m.maxActive > 0 && idle+inUse+warming >= m.maxActive) {
			break
		}
		k++
		if !seq {
			warming++
			continue
		}
		idle++
		if m.maxIdle > 0 {
			lru = append(lru, -1) // a warm conn of addr
			if len(lru) > m.maxIdle {
				if lru[0] == -1 || m.open[lru[0]] == addr {
					idle--
				}
				lru = lru[1:]
			}
		}
	}
	return k
}

// check compares the pool with the model.
func (m *model) check(p *Pool, d *testnet.FakeDialer) error {
	// Sockets: the open ones are the model's, none is closed twice, and no
	// address has more open than WithMaxActive.
	if got := d.Dials(); got != m.nextID {
		return fmt.Errorf("%d dials, model has %d", got, m.nextID)
	}
	if got, want := d.Open(), int64(len(m.open)); got != want {
		return fmt.Errorf("%d conns open, model has %d", got, want)
	}
	openAt := map[string]int{}
	for _, c := range d.Conns() {
		closes := c.Closes.Load()
		_, open := m.open[c.ID]
		switch {
		case closes > 1:
			return fmt.Errorf("conn %d closed %d times", c.ID, closes)
		case open != (closes == 0):
			return fmt.Errorf("conn %d: closed %d times, model has it open: %v", c.ID, closes, open)
		}
		if closes == 0 {
			openAt[c.Address]++
		}
	}
	for addr, n := range openAt {
		if m.maxActive > 0 && n > m.maxActive {
			return fmt.Errorf("%s: %d conns open, over WithMaxActive(%d)", addr, n, m.maxActive)
		}
	}

	// Stats, per address and pool-wide, and the counters.
	s := p.Stats()
	var idleAll, inUseAll int64
	for _, addr := range fuzzAddrs {
		var ds DestinationStats
		for _, x := range s.Destinations {
			if x.Address == addr {
				ds = x
			}
		}
		idle, inUse := int64(len(m.idle[addr])), int64(m.inUseAt(addr))
		if ds.Idle != idle || ds.InUse != inUse || ds.Total != idle+inUse || ds.Waiting != 0 {
			return fmt.Errorf("%s: stats idle %d in use %d total %d waiting %d, model idle %d in use %d",
				addr, ds.Idle, ds.InUse, ds.Total, ds.Waiting, idle, inUse)
		}
		idleAll += idle
		inUseAll += inUse
	}
	if s.Idle != idleAll || s.InUse != inUseAll || s.Total != idleAll+inUseAll || s.Waiting != 0 {
		return fmt.Errorf("pool stats idle %d in use %d total %d waiting %d, model idle %d in use %d",
			s.Idle, s.InUse, s.Total, s.Waiting, idleAll, inUseAll)
	}
	if m.maxIdle > 0 && s.Idle > int64(m.maxIdle) {
		return fmt.Errorf("%d idle conns, over WithMaxIdle(%d)", s.Idle, m.maxIdle)
	}
	got := s.Counters
	got.WaitDuration = 0
	if got != m.counters {
		return fmt.Errorf("counters\n%+v\nmodel has\n%+v", got, m.counters)
	}

	// Handles: those in use hold their conn, ended ones hold none.
	held := map[*pconn]bool{}
	for _, h := range m.inUse {
		pc := h.c.load()
		if pc == nil || fakeID(pc.v) != h.id {
			return fmt.Errorf("handle of conn %d in use does not hold it", h.id)
		}
		held[pc] = true
	}
	for _, c := range m.ended {
		if c.load() != nil {
			return fmt.Errorf("ended handle %s still holds its conn", c.LocalAddr())
		}
	}

	// Buckets: the model's, with its clock, its idle stack in order with
	// the stamps and deadlines, nothing in flight, no idle conn in use.
	p.buckets.mu.Lock()
	defer p.buckets.mu.Unlock()
	if p.buckets.n != len(m.bnow) {
		return fmt.Errorf("%d buckets, model has %d", p.buckets.n, len(m.bnow))
	}
	nodes := map[*lruNode]int64{}
	for addr, b := range p.buckets.mapLocked() {
		bnow, ok := m.bnow[addr]
		if !ok {
			return fmt.Errorf("bucket %s exists; the model has none", addr)
		}
		b.mu.Lock()
		err := m.checkBucketLocked(b, bnow, held, nodes)
		b.mu.Unlock()
		if err != nil {
			return fmt.Errorf("bucket %s: %v", addr, err)
		}
	}
	if p.lru == nil {
		return nil
	}
	p.lru.mu.Lock()
	defer p.lru.mu.Unlock()
	var order []int64
	for n := p.lru.head; n != nil; n = n.next {
		id, ok := nodes[n]
		if !ok || n.evicted {
			return fmt.Errorf("LRU node %p (evicted %v) is not on an idle stack", n, n.evicted)
		}
		order = append(order, id)
	}
	if !slices.Equal(order, m.lru) || p.lru.n != len(order) {
		return fmt.Errorf("LRU %v (n %d), model has %v", order, p.lru.n, m.lru)
	}
	return nil
}

func (m *model) checkBucketLocked(b *bucket, bnow int64, held map[*pconn]bool, nodes map[*lruNode]int64) error {
	if b.dialing != 0 || b.warmingLocked() != 0 || b.closing != 0 || b.waitingLocked() != 0 || b.dropped {
		return fmt.Errorf("dialing %d warming %d closing %d waiters %d dropped %v between steps",
			b.dialing, b.warmingLocked(), b.closing, b.waitingLocked(), b.dropped)
	}
	if b.cold != nil && b.cold.waiters.len() != int(b.waiting) {
		return fmt.Errorf("%d waiters queued, %d counted", b.cold.waiters.len(), b.waiting)
	}
	if b.now != bnow {
		return fmt.Errorf("clock %d, model has %d", b.now, bnow)
	}
	want := m.idle[b.address]
	if len(b.idleCopyLocked()) != len(want) {
		return fmt.Errorf("%d idle, model has %d", len(b.idleCopyLocked()), len(want))
	}
	for i, ic := range b.idleCopyLocked() {
		id := fakeID(ic.pc.v)
		if w := want[i]; id != w.id || ic.since != w.since || ic.pc.deadline != w.deadline {
			return fmt.Errorf("idle[%d] is conn %d since %d deadline %d, model has conn %d since %d deadline %d",
				i, id, ic.since, ic.pc.deadline, w.id, w.since, w.deadline)
		}
		if held[ic.pc] {
			return fmt.Errorf("conn %d is idle and in use", id)
		}
		if (ic.info.node != nil) != (m.maxIdle > 0) {
			return fmt.Errorf("idle conn %d has LRU node %p with WithMaxIdle(%d)", id, ic.info.node, m.maxIdle)
		}
		if ic.info.node != nil {
			nodes[ic.info.node] = id
		}
	}
	return nil
}
