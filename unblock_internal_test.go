package connpool

import (
	"context"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rvValue is a pooled value that is not a net.Conn, with drpc's Closed and
// Unblocked channels.
type rvValue struct {
	id        int
	dead      chan struct{}
	unblocked chan struct{}
}

func (v *rvValue) Closed() <-chan struct{}    { return v.dead }
func (v *rvValue) Unblocked() <-chan struct{} { return v.unblocked }
func (v *rvValue) Close() error               { return nil }

type rvDialer struct {
	mu  sync.Mutex
	all []*rvValue
}

func (d *rvDialer) dial(context.Context, string) (io.Closer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := &rvValue{id: len(d.all) + 1, dead: make(chan struct{}), unblocked: make(chan struct{})}
	close(v.unblocked)
	d.all = append(d.all, v)
	return v, nil
}

// rvGoroutines counts the goroutines whose stack holds all of parts.
func rvGoroutines(parts ...string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
outer:
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, p := range parts {
			if !strings.Contains(g, p) {
				continue outer
			}
		}
		n++
	}
	return n
}

func rvEventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func rvWaiting(b *bucket) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waitingLocked()
}

// TestAbandonedIdleDeliveryIsCheckedByTheNextWaiter: an idle value that
// unblocked is handed to the oldest waiter just as that waiter's context
// ends. The value goes on to the next waiter as an idle value, which that
// waiter checks: a value whose Closed channel is closed is not handed out.
func TestAbandonedIdleDeliveryIsCheckedByTheNextWaiter(t *testing.T) {
	var d rvDialer
	p, err := New(nil, 4, time.Minute, withValueDial(d.dial), WithMaxActive(1))
	require.NoError(t, err)
	defer p.Close()

	c, err := p.checkout(context.Background(), "a", false)
	require.NoError(t, err)
	v := c.load().v.(*rvValue)
	v.unblocked = make(chan struct{}) // still cancelling its call
	require.NoError(t, c.Close())     // idle, blocked
	b := p.buckets.lookup("a")

	type result struct {
		c   *Conn
		err error
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r1, r2 := make(chan result, 1), make(chan result, 1)
	go func() { c, err := p.checkout(ctx1, "a", false); r1 <- result{c, err} }()
	rvEventually(t, func() bool { return rvWaiting(b) == 1 }, "W1 waits")
	go func() { c, err := p.checkout(context.Background(), "a", false); r2 <- result{c, err} }()
	rvEventually(t, func() bool { return rvWaiting(b) == 2 }, "W2 waits")
	rvEventually(t, func() bool { return rvGoroutines("connpool.(*Pool).wait(", "[select") == 2 }, "both parked")

	// W1's context ends; it wakes and queues for b.mu in giveUp. Before it
	// gets the lock, the value unblocks, dead, and the watcher's step runs
	// (here under the test's hold of b.mu, deterministically).
	b.mu.Lock()
	cancel1()
	rvEventually(t, func() bool { return rvGoroutines("(*bucket).giveUp(") == 1 }, "W1 gives up")
	close(v.dead)
	close(v.unblocked)
	toClose := b.serveUnblockedLocked(nil)
	b.mu.Unlock()
	require.Empty(t, toClose)

	res1 := <-r1
	assert.ErrorIs(t, res1.err, context.Canceled)
	var res2 result
	select {
	case res2 = <-r2:
	case <-time.After(10 * time.Second):
		t.Fatal("W2 not served")
	}
	require.NoError(t, res2.err)
	defer res2.c.Release()
	got := res2.c.load().v.(*rvValue)
	select {
	case <-got.Closed():
		t.Errorf("W2 was handed value %d, whose Closed channel is closed, without a liveness check", got.id)
	default:
	}
}

// TestWatcherJudgesLifetimeOnAFreshReading: a value that reached its max
// lifetime while it sat idle and blocked is closed, not handed out, when it
// unblocks, although no checkout moved the bucket's clock meanwhile.
func TestWatcherJudgesLifetimeOnAFreshReading(t *testing.T) {
	var d rvDialer
	clock := new(fakeClock)
	clock.advance(time.Hour)
	p, err := New(nil, 4, time.Hour, withValueDial(d.dial), withClock(clock),
		WithMaxActive(1), WithMaxLifetime(time.Hour))
	require.NoError(t, err)
	defer p.Close()

	c, err := p.checkout(context.Background(), "a", false)
	require.NoError(t, err)
	v := c.load().v.(*rvValue)
	v.unblocked = make(chan struct{})
	require.NoError(t, c.Close()) // idle, blocked
	b := p.buckets.lookup("a")

	got := make(chan *Conn, 1)
	go func() {
		c, err := p.checkout(context.Background(), "a", false)
		assert.NoError(t, err)
		got <- c
	}()
	rvEventually(t, func() bool { return rvWaiting(b) == 1 }, "the checkout waits")
	clock.advance(2 * time.Hour) // v is past its max lifetime now
	close(v.unblocked)
	var w *Conn
	select {
	case w = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not served")
	}
	require.NotNil(t, w)
	defer w.Release()
	assert.NotSame(t, v, w.load().v, "a value two hours old was handed out with a max lifetime of one hour")
}
