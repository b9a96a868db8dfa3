package connpool

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// model is what a pool with capacity 2 and a one-minute timeout must hold,
// kept in the simplest way: per address, a stack of idle conn IDs with their
// idle stamps, and the latest clock reading the pool took for the address.
type model struct {
	now      int64
	idle     map[string][]modelIdle
	bnow     map[string]int64 // addresses with a bucket, and its clock
	inUse    []modelHandle
	ended    []*Conn
	open     map[int64]bool
	nextID   int64
	closed   bool
	timeout  int64
	capacity int
}

type modelIdle struct {
	id    int64
	since int64
}

type modelHandle struct {
	c    *Conn
	id   int64
	addr string
}

var fuzzAddrs = []string{"a:1", "b:1", "c:1"}

func connID(c *Conn) int64 {
	id, err := strconv.ParseInt(c.LocalAddr().String()[len("fake-"):], 10, 64)
	if err != nil {
		panic(err)
	}
	return id
}

// FuzzPool decodes its input as pool operations, runs them against a pool
// on a fake clock and against the model, and checks the invariants after
// every step. The seed corpus in testdata/fuzz/FuzzPool runs as a normal
// test.
func FuzzPool(f *testing.F) {
	f.Add([]byte{0, 2, 0, 8, 16, 2, 10, 3, 4, 5})
	f.Add([]byte{0, 0, 0, 2, 2, 2, 0, 253, 0, 6, 7, 2, 0})
	f.Add([]byte{8, 16, 10, 18, 61, 6, 8, 3, 4, 7, 8, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 512 {
			ops = ops[:512]
		}
		var d testnet.FakeDialer
		clock := new(fakeClock)
		clock.advance(time.Hour)
		p, err := New(d.Dial, 2, time.Minute, withClock(clock))
		if err != nil {
			t.Fatal(err)
		}
		m := &model{
			now: clock.read(), idle: map[string][]modelIdle{}, bnow: map[string]int64{},
			open: map[int64]bool{}, timeout: int64(time.Minute), capacity: 2,
		}
		for step, b := range ops {
			op, arg := b%8, int(b/8)
			if err := m.apply(p, clock, op, arg); err != nil {
				t.Fatalf("step %d (op %d, arg %d): %v", step, op, arg, err)
			}
			p.closers.Wait() // conns a checkout discarded are closed in the background
			if err := m.check(p, &d); err != nil {
				t.Fatalf("after step %d (op %d, arg %d): %v", step, op, arg, err)
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

func (m *model) apply(p *Pool, clock *fakeClock, op byte, arg int) error {
	switch op {
	case 0, 1: // Get
		addr := fuzzAddrs[arg%len(fuzzAddrs)]
		c, err := p.Get(addr)
		if m.closed {
			if !errors.Is(err, ErrClosed) {
				return fmt.Errorf("Get after Close: %v", err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if m.now > m.bnow[addr] {
			m.bnow[addr] = m.now
		}
		want := int64(0)
		stack := m.idle[addr]
		if n := len(stack); n > 0 && m.now-stack[n-1].since < m.timeout {
			want = stack[n-1].id
			m.idle[addr] = stack[:n-1]
		} else {
			for _, ic := range stack { // all expired
				delete(m.open, ic.id)
			}
			m.idle[addr] = nil
			m.nextID++
			want = m.nextID
			m.open[want] = true
		}
		h := c.(*Conn)
		if got := connID(h); got != want {
			return fmt.Errorf("Get(%s) gave conn %d, want %d", addr, got, want)
		}
		m.inUse = append(m.inUse, modelHandle{h, want, addr})
	case 2, 3: // Close or Release a conn in use
		if len(m.inUse) == 0 {
			return nil
		}
		i := arg % len(m.inUse)
		h := m.inUse[i]
		m.inUse = append(m.inUse[:i], m.inUse[i+1:]...)
		m.ended = append(m.ended, h.c)
		if op == 3 {
			delete(m.open, h.id)
			return h.c.Release()
		}
		if !m.closed && len(m.idle[h.addr]) < m.capacity {
			m.idle[h.addr] = append(m.idle[h.addr], modelIdle{h.id, m.bnow[h.addr]})
		} else {
			delete(m.open, h.id)
		}
		return h.c.Close()
	case 4: // a second Close or Release on an ended handle
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
			return fmt.Errorf("second close: %v", err)
		}
	case 5: // time passes
		clock.advance(time.Duration(arg) * 5 * time.Second)
		m.now = clock.read()
	case 6: // the cleaner sweeps
		p.sweep(m.now)
		for addr := range m.bnow {
			m.bnow[addr] = m.now
			kept := m.idle[addr][:0]
			for _, ic := range m.idle[addr] {
				if m.now-ic.since >= m.timeout {
					delete(m.open, ic.id)
				} else {
					kept = append(kept, ic)
				}
			}
			m.idle[addr] = kept
			if len(kept) == 0 && m.inUseAt(addr) == 0 {
				delete(m.bnow, addr)
			}
		}
	case 7: // Pool.Close, once in a while
		if arg%4 != 0 {
			return nil
		}
		err := p.Close()
		if m.closed != errors.Is(err, ErrClosed) {
			return fmt.Errorf("Close: %v", err)
		}
		m.closed = true
		for addr, stack := range m.idle {
			for _, ic := range stack {
				delete(m.open, ic.id)
			}
			m.idle[addr] = nil
		}
	}
	return nil
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

func (m *model) check(p *Pool, d *testnet.FakeDialer) error {
	if got, want := d.Open(), int64(len(m.open)); got != want {
		return fmt.Errorf("%d conns open, model has %d", got, want)
	}
	s := p.Stats()
	for _, addr := range fuzzAddrs {
		var ds DestinationStats
		for _, x := range s.Destinations {
			if x.Address == addr {
				ds = x
			}
		}
		idle, inUse := int64(len(m.idle[addr])), int64(m.inUseAt(addr))
		if ds.Idle != idle || ds.InUse != inUse || ds.Total != idle+inUse {
			return fmt.Errorf("%s: stats idle %d in use %d total %d, model idle %d in use %d",
				addr, ds.Idle, ds.InUse, ds.Total, idle, inUse)
		}
	}
	// No conn is both idle and in use.
	held := map[*pconn]bool{}
	for _, h := range m.inUse {
		held[h.c.load()] = true
	}
	p.buckets.mu.Lock()
	defer p.buckets.mu.Unlock()
	for _, b := range p.buckets.all {
		b.mu.Lock()
		for _, ic := range b.idle {
			if held[ic.pc] {
				b.mu.Unlock()
				return fmt.Errorf("conn %s is idle and in use", ic.pc.nc.LocalAddr())
			}
		}
		b.mu.Unlock()
	}
	return nil
}
