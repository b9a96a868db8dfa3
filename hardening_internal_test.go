package connpool

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// Regression: Warm's dial goroutines read the loop's bucket variable when
// they ran, so a dial reserved on a bucket that Drain retired could end on
// another bucket, which panicked in a background goroutine and left the
// first bucket's dial counted forever.
func TestWarmRacingDrainNeverPanicsAndLeavesNoDialCounted(t *testing.T) {
	for round := range 100 {
		var d testnet.FakeDialer
		p, err := New(d.Dial, 16, 0, WithMaxActive(12))
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Go(func() { _ = p.Warm(context.Background(), "a:1", 16) })
		wg.Go(func() {
			for range 4 {
				_ = p.Drain("a:1")
				runtime.Gosched()
			}
		})
		wg.Wait()

		p.buckets.mu.Lock()
		for _, b := range p.buckets.mapLocked() {
			b.mu.Lock()
			assert.Zero(t, b.dialing, "round %d: dials left counted", round)
			assert.Zero(t, b.warmingLocked(), "round %d: warming dials left counted", round)
			assert.EqualValues(t, d.Open(), b.total, "round %d: counted conns are the open ones", round)
			b.mu.Unlock()
		}
		p.buckets.mu.Unlock()
		require.NoError(t, p.Close())
		assert.Zero(t, d.Open(), "round %d", round)
	}
}

// Regression: Get closed the expired conns it found inline, so one Get with
// eight expired conns whose Close took 50 ms each took 400 ms.
func TestGetDoesNotWaitOnTheCloseOfDiscardedConns(t *testing.T) {
	gate := make(chan struct{})
	d := testnet.FakeDialer{OnClose: func(*testnet.FakeConn) { <-gate }}
	clock := new(fakeClock)
	clock.advance(time.Hour)
	p, err := New(d.Dial, 8, time.Hour, WithMaxActive(9), withClock(clock))
	require.NoError(t, err)
	defer func() {
		require.NoError(t, p.Close())
		assert.Zero(t, d.Open())
	}()

	var conns []*Conn
	for range 8 {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		conns = append(conns, c.(*Conn))
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	clock.advance(2 * time.Hour) // all eight expire

	got := make(chan error, 1)
	go func() {
		c, err := p.Get("a:1")
		if err == nil {
			err = c.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		close(gate)
		t.Fatal("Get waited on the Close of expired conns")
	}
	b := p.buckets.lookup("a:1")
	b.mu.Lock()
	assert.EqualValues(t, 8, b.closing, "the slots are freed only when Close returns")
	b.mu.Unlock()
	close(gate)
	p.closers.Wait()
	assert.EqualValues(t, 8, p.Stats().ClosedIdleTimeout)
	assert.EqualValues(t, 1, d.Open())
}

// sweepBlockedOnALock reports whether a goroutine running a sweep is
// blocked acquiring a mutex.
func sweepBlockedOnALock() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "connpool.(*Pool).sweep") && strings.Contains(g, "sync.(*Mutex).Lock") {
			return true
		}
	}
	return false
}

// Regression: a sweep held the registry's lock from start to end (14–18 ms
// at 100,000 addresses), and every Get of a new address waited for it.
func TestNewAddressGetDoesNotWaitForASweep(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4)
	for i := range 10 {
		c, err := p.Get("10.0.0." + strconv.Itoa(i) + ":80")
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}

	// Hold one bucket so that the sweep stops there.
	held := p.buckets.lookup("10.0.0.3:80")
	held.mu.Lock()
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		p.sweep(clock.read())
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !sweepBlockedOnALock() {
		if time.Now().After(deadline) {
			held.mu.Unlock()
			t.Fatal("the sweep never reached the held bucket")
		}
		time.Sleep(time.Millisecond)
	}

	got := make(chan error, 1)
	go func() {
		c, err := p.Get("10.0.1.1:80")
		if err == nil {
			err = c.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		held.mu.Unlock()
		<-got
		t.Fatal("a Get of a new address waited for the sweep")
	}
	held.mu.Unlock()
	<-swept
}

// retainedHeap returns the heap in use after a collection.
func retainedHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Regression: Go maps never shrink, so the registry kept about 70 bytes
// for every address it had ever seen (7 MB after 100,000 addresses came and
// went).
func TestRegistryGivesBackMemoryAfterChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 100,000 addresses")
	}
	dial := func(address string) (net.Conn, error) { return &testnet.FakeConn{Address: address}, nil }
	live := make([]string, 1000)
	for i := range live {
		live[i] = "live-" + strconv.Itoa(i) + ":80"
	}
	build := func(churn int) (*Pool, uint64) {
		before := retainedHeap()
		p, err := New(dial, 4, time.Hour)
		require.NoError(t, err)
		for _, address := range live {
			c, err := p.Get(address)
			require.NoError(t, err)
			require.NoError(t, c.Close())
		}
		for i := range churn {
			c, err := p.Get("gone-" + strconv.Itoa(i) + ":80")
			require.NoError(t, err)
			require.NoError(t, c.(*Conn).Release())
		}
		p.sweep(p.clock())
		p.buckets.builds.Wait() // the snapshot is rebuilt in the background
		require.Len(t, p.Stats().Destinations, len(live))
		return p, retainedHeap() - before
	}
	fresh, need := build(0)
	require.NoError(t, fresh.Close())
	churned, kept := build(100_000)
	defer churned.Close()
	t.Logf("1,000 live addresses: %d B fresh, %d B after 100,000 came and went", need, kept)
	assert.LessOrEqual(t, kept, 2*need, "after churn the pool keeps at most twice what its live addresses need")
}

func TestDrainedAddressIsForgottenByTheCleanerOnceEmpty(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 8)

	inUse, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, p.Drain("a:1"))
	p.sweep(clock.read())
	assert.Len(t, p.Stats().Destinations, 1, "still there while a conn is in use")
	require.NoError(t, inUse.Close())
	p.sweep(clock.read())
	assert.Empty(t, p.Stats().Destinations, "forgotten once empty")
	assert.EqualValues(t, 1, p.Stats().Dials, "its counts stay in the pool-wide totals")
	assert.EqualValues(t, 1, p.Stats().ClosedDrained)
}

// The bucket counts its queued waiters in a field of its own, so that Close
// need not read the queue. Checkouts that wait, are handed a conn, are
// granted a slot, or give up must keep the count equal to the queue's
// length.
func TestWaitingCountMatchesTheQueue(t *testing.T) {
	var d testnet.FakeDialer
	p, err := New(d.Dial, 2, time.Minute, WithMaxActive(2))
	require.NoError(t, err)
	defer p.Close()
	b := func() *bucket { return p.buckets.lookup("a:1") }
	check := func() {
		t.Helper()
		bk := b()
		if bk == nil {
			return
		}
		bk.mu.Lock()
		queued := 0
		if bk.cold != nil {
			queued = bk.cold.waiters.len()
		}
		waiting := bk.waiting
		bk.mu.Unlock()
		require.EqualValues(t, queued, waiting)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration((g+i)%3)*50*time.Microsecond+time.Microsecond)
				if (g+i)%7 == 0 {
					cancel() // gives up at once
				}
				var c net.Conn
				var err error
				if (g+i)%4 == 0 {
					c, err = p.NewContext(ctx, "a:1")
				} else {
					c, err = p.GetContext(ctx, "a:1")
				}
				cancel()
				if err != nil {
					continue
				}
				if i%3 == 0 {
					time.Sleep(100 * time.Microsecond) // holds it, so that others queue and give up
				}
				if i%5 == 0 {
					_ = c.(*Conn).Release()
				} else {
					_ = c.Close()
				}
			}
		}()
	}
	for range 200 {
		check()
		runtime.Gosched()
	}
	wg.Wait()
	check()
	bk := b()
	bk.mu.Lock()
	defer bk.mu.Unlock()
	assert.Zero(t, bk.waiting, "no checkout runs")
}
