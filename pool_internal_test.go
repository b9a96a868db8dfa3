package connpool

import (
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// TestMain, with goleak, is in connpool_test.go: both test packages of this
// directory build into one binary.

// fakeClock is a clock the test moves by hand. Unless lag is set, advance
// publishes the new time to the coarse clock of the pools attached to it.
type fakeClock struct {
	now   atomic.Int64
	reads atomic.Int64 // exact readings the pools took
	lag   bool
	mu    sync.Mutex
	pools []*Pool
}

func (c *fakeClock) read() int64 {
	c.reads.Add(1)
	return c.now.Load()
}

// advance moves the clock forward by d.
func (c *fakeClock) advance(d time.Duration) { c.set(c.now.Load() + int64(d)) }

// set moves the clock to now, which must not be earlier than its time.
func (c *fakeClock) set(now int64) {
	c.now.Store(now)
	if !c.lag {
		c.publish(now)
	}
}

// publish advances the coarse clock of the attached pools to now, as
// their cleaner's tick would.
func (c *fakeClock) publish(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.pools {
		p.publish(now)
	}
}

func (c *fakeClock) attach(p *Pool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pools = append(c.pools, p)
}

// withClock makes the pool read c, and advancing c publishes the new time
// to the pool's coarse clock at once, so that the pool judges conns by
// exact readings. Tests of the coarse clock itself use a fakeClock with
// lag set.
func withClock(c *fakeClock) Option {
	return func(o *options) {
		o.clock = c.read
		o.onPool = c.attach
	}
}

// newTestPool returns a pool on a fake clock. Its timeout is an hour, so
// the real cleaner never ticks during a test; tests call sweep themselves.
func newTestPool(t *testing.T, d *testnet.FakeDialer, capacity int) (*Pool, *fakeClock) {
	t.Helper()
	clock := new(fakeClock)
	clock.advance(time.Hour) // start away from zero
	p, err := New(d.Dial, capacity, time.Hour, withClock(clock))
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p, clock
}

func TestGetNeverHandsOutConnIdleForTimeout(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4)

	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())

	clock.advance(time.Hour - time.Nanosecond)
	c2, err := p.Get("a:1")
	require.NoError(t, err)
	assert.Equal(t, c.LocalAddr(), c2.LocalAddr(), "idle just under the timeout: reused")
	require.NoError(t, c2.Close())

	// The Get above read the clock, so the conn's idle time restarts from
	// there.
	clock.advance(time.Hour)
	c3, err := p.Get("a:1")
	require.NoError(t, err)
	defer c3.Close()
	assert.NotEqual(t, c.LocalAddr(), c3.LocalAddr(), "idle for the timeout: not handed out")
	p.closers.Wait() // Get closes discarded conns in the background
	assert.EqualValues(t, 1, d.Conns()[0].Closes.Load(), "the expired conn is closed by Get")
	s := p.Stats()
	assert.EqualValues(t, 1, s.ClosedIdleTimeout)
	assert.EqualValues(t, 1, s.Total)
}

func TestGetClosesEveryExpiredConnOfTheAddress(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4)

	var conns []net.Conn
	for range 3 {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		conns = append(conns, c)
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	clock.advance(2 * time.Hour)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	defer c.Close()
	p.closers.Wait() // Get closes discarded conns in the background
	assert.EqualValues(t, 4, d.Dials())
	assert.EqualValues(t, 1, d.Open())
	assert.EqualValues(t, 3, p.Stats().ClosedIdleTimeout)
}

// Regression: the predecessor closed sockets while holding its bucket lock,
// so a slow close stalled every Get of the address.
func TestSweepClosesSocketsOutsideBucketLock(t *testing.T) {
	var d testnet.FakeDialer
	var p *Pool
	var checked atomic.Int64
	d.OnClose = func(fc *testnet.FakeConn) {
		b := p.buckets.lookup(fc.Address)
		if assert.True(t, b.mu.TryLock(), "bucket lock held while closing a socket") {
			b.mu.Unlock()
		}
		if assert.True(t, p.buckets.mu.TryLock(), "registry lock held while closing a socket") {
			p.buckets.mu.Unlock()
		}
		checked.Add(1)
	}
	p, clock := newTestPool(t, &d, 4)

	for _, addr := range []string{"a:1", "b:1"} {
		c1, err := p.Get(addr)
		require.NoError(t, err)
		c2, err := p.Get(addr)
		require.NoError(t, err)
		require.NoError(t, c1.Close())
		require.NoError(t, c2.Close())
	}
	clock.advance(2 * time.Hour)
	p.buckets.builds.Wait() // a snapshot build takes the registry lock for a moment
	p.sweep(clock.read())
	assert.EqualValues(t, 4, checked.Load())
	assert.EqualValues(t, 0, d.Open())
}

func TestSweepRemovesOnlyTheExpiredPrefix(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 8)

	old1, _ := p.Get("a:1")
	old2, _ := p.Get("a:1")
	young, _ := p.Get("a:1")
	require.NoError(t, old1.Close())
	require.NoError(t, old2.Close())
	clock.advance(30 * time.Minute)
	p.sweep(clock.read()) // advances the bucket's clock to the return time of young
	require.NoError(t, young.Close())

	clock.advance(30 * time.Minute)
	p.sweep(clock.read())

	b := p.buckets.lookup("a:1")
	b.mu.Lock()
	idle := append([]idleConn(nil), b.idleCopyLocked()...)
	total := b.total
	b.mu.Unlock()
	require.Len(t, idle, 1)
	assert.Equal(t, young.LocalAddr(), idle[0].pc.v.(net.Conn).LocalAddr())
	assert.EqualValues(t, 1, total)
	assert.EqualValues(t, 2, p.Stats().ClosedIdleTimeout)
}

func TestIdleStampsNeverDecrease(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 64)

	var conns []net.Conn
	for i := range 32 {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		conns = append(conns, c)
		if i%3 == 0 {
			clock.advance(time.Minute)
		}
	}
	for i, c := range conns {
		if i%5 == 0 {
			clock.advance(time.Minute)
			c2, err := p.Get("a:1") // a clock reading for the bucket
			require.NoError(t, err)
			require.NoError(t, c2.(*Conn).Release())
		}
		require.NoError(t, c.Close())
	}
	b := p.buckets.lookup("a:1")
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := 1; i < len(b.idleCopyLocked()); i++ {
		assert.LessOrEqual(t, b.idleCopyLocked()[i-1].since, b.idleCopyLocked()[i].since, "stamps must not decrease towards the top")
	}
	assert.Positive(t, len(b.idleCopyLocked()))
}

func TestDroppedBucketsLeaveTheRegistry(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4)

	var handles []*Conn
	for i := range 100 {
		c, err := p.Get("10.0.0." + strconv.Itoa(i) + ":80")
		require.NoError(t, err)
		handles = append(handles, c.(*Conn))
	}
	for _, c := range handles {
		require.NoError(t, c.Release())
	}
	p.sweep(clock.read())

	r := &p.buckets
	r.builds.Wait() // the snapshot is rebuilt in the background
	r.mu.Lock()
	assert.Zero(t, r.n)
	assert.Empty(t, r.mapLocked())
	assert.Zero(t, r.read.Load().n, "the snapshot must not keep dropped buckets alive")
	r.mu.Unlock()
	for _, c := range handles {
		c.info.b.mu.Lock()
		assert.True(t, c.info.b.dropped)
		c.info.b.mu.Unlock()
	}
	assert.EqualValues(t, 100, p.Stats().Released)
}

func TestGetOnADroppedBucketMovesToANewOne(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4)

	c, err := p.Get("a:1")
	require.NoError(t, err)
	old := c.(*Conn).info.b
	require.NoError(t, c.(*Conn).Release())

	// Drop the bucket but leave it in the snapshot, as a concurrent sweep
	// would between its removal and the next snapshot.
	r := &p.buckets
	r.mu.Lock()
	snapshotNow(r)
	snapshot := r.read.Load()
	r.mu.Unlock()
	require.NotNil(t, snapshot.get("a:1"))
	p.sweep(clock.read())
	r.read.Store(snapshot)

	c, err = p.Get("a:1")
	require.NoError(t, err)
	defer c.Close()
	assert.NotSame(t, old, c.(*Conn).info.b)
	r.mu.Lock()
	assert.Same(t, r.getLocked("a:1"), c.(*Conn).info.b)
	r.mu.Unlock()
}

func TestHandlesAreNeverReused(t *testing.T) {
	var d testnet.FakeDialer
	p, _ := newTestPool(t, &d, 4)

	seen := make(map[*Conn]bool)
	for range 3 * handleBatch {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		h := c.(*Conn)
		assert.False(t, seen[h], "handle handed out twice")
		seen[h] = true
		require.NoError(t, c.Close())
	}
}

func TestBucketPanicsOnInconsistentCounts(t *testing.T) {
	b := &bucket{address: "a:1", pool: &Pool{}, total: 0, stack: &[]idleConn{{}}}
	assert.PanicsWithValue(t, "connpool: bug: bucket a:1 counts are inconsistent", b.checkLocked)
}

// snapshotNow publishes a snapshot of the registry's map at once, as a
// finished build would. The caller holds r.mu; no build may be running.
func snapshotNow(r *registry) {
	m := r.mapLocked()
	t := newTable(r.seed, len(m))
	for _, b := range m {
		t.add(b)
	}
	r.read.Store(t)
	r.pending = nil
	r.misses = 0
}

// mapLocked returns a copy of the registry's authoritative map. The caller
// holds r.mu.
func (r *registry) mapLocked() map[string]*bucket {
	m := make(map[string]*bucket, r.n)
	r.eachLocked(func(b *bucket) { m[b.address] = b })
	return m
}

func TestQuietAddressDropsItsSpareHandles(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4)
	for range 21 { // a batch of 16, then one with 11 left
		c, err := p.Get("a:1")
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	b := p.buckets.lookup("a:1")
	b.mu.Lock()
	require.Equal(t, 11, b.spareHandlesLocked())
	b.mu.Unlock()

	p.sweep(clock.read()) // saw checkouts since the last sweep: keeps them
	b.mu.Lock()
	assert.Equal(t, 11, b.spareHandlesLocked())
	b.mu.Unlock()
	p.sweep(clock.read()) // quiet since: drops them
	b.mu.Lock()
	assert.Nil(t, b.handles)
	b.mu.Unlock()

	c, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, c.Close())
	b.mu.Lock()
	assert.Equal(t, handleBatch-1, b.spareHandlesLocked(), "a new batch")
	b.mu.Unlock()
}

func TestLargePoolAllocatesHandlesOneAtATime(t *testing.T) {
	var d testnet.FakeDialer
	p, _ := newTestPool(t, &d, 4)
	getClose := func(address string) {
		t.Helper()
		c, err := p.Get(address)
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	for i := range batchedAddresses {
		getClose("a:" + strconv.Itoa(i))
	}
	b := p.buckets.lookup("a:0")
	b.mu.Lock()
	assert.Equal(t, handleBatch-1, b.spareHandlesLocked(), "at batchedAddresses addresses, handles come in batches")
	b.mu.Unlock()

	getClose("b:1")
	getClose("b:1")
	b = p.buckets.lookup("b:1")
	b.mu.Lock()
	assert.Nil(t, b.handles, "past batchedAddresses addresses, one at a time")
	b.mu.Unlock()
}

// idleCopyLocked returns a copy of b's idle stack, oldest first, leaving b as
// it is. The caller holds b.mu.
func (b *bucket) idleCopyLocked() []idleConn {
	s := slices.Clone(b.stackLocked())
	if b.top.pc != nil {
		s = append(s, b.top)
	}
	return s
}

// TestHotStructSizes keeps the structures of the hit path at the sizes the
// performance notes count on: a handle in the 32-byte size class, which
// is what every checkout allocates, and an address's bucket, with its
// newest idle conn inline, at 128 bytes, which is what a pool of many
// addresses keeps per address (on 64-bit platforms). A field added to the
// bucket without one taken out would move it to the 144- or 160-byte size
// class, whose objects straddle cache lines, and slow a pool of many
// addresses down.
func TestHotStructSizes(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) == 8 {
		assert.EqualValues(t, 32, unsafe.Sizeof(Conn{}), "Conn")
		assert.EqualValues(t, 128, unsafe.Sizeof(bucket{}), "bucket")
		assert.EqualValues(t, 24, unsafe.Sizeof(idleConn{}), "idleConn")
		assert.EqualValues(t, 16, unsafe.Sizeof(slot{}), "table slot")
		return
	}
	// 32-bit platforms: a word less per pointer, the 64-bit fields as
	// they are.
	assert.EqualValues(t, 24, unsafe.Sizeof(Conn{}), "Conn")
	assert.LessOrEqual(t, unsafe.Sizeof(bucket{}), uintptr(128), "bucket")
}

// TestLeakScanRacesWithClose runs the leak tracker's scan, which the
// cleaner runs, at the same time as a holder's Close: under -race, the scan
// must see the handle's end through the bucket's lock, which Close ends it
// under.
func TestLeakScanRacesWithClose(t *testing.T) {
	var d testnet.FakeDialer
	clock := new(fakeClock)
	p, err := New(d.Dial, 4, time.Hour, withClock(clock),
		WithLeakDetection(time.Hour, func(LeakReport) { t.Error("nothing is held for an hour") }))
	require.NoError(t, err)
	defer p.Close()
	for range 100 {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Go(func() { p.leaks.scan(clock.read()) })
		wg.Go(func() { assert.NoError(t, c.Close()) })
		wg.Wait()
	}
	p.leaks.scan(clock.read())
	p.leaks.mu.Lock()
	defer p.leaks.mu.Unlock()
	assert.Empty(t, p.leaks.held, "every handle ended, and a scan drops it")
}

// TestCountersCarryPast32Bits: the bucket counts reuses and dials in 32
// bits and carries into cold, so Counters keep counting past 2^32 and a
// reuse taken back across the wrap leaves them exact.
func TestCountersCarryPast32Bits(t *testing.T) {
	b := &bucket{address: "a:1", pool: &Pool{}}
	b.reuses, b.dials = math.MaxUint32, math.MaxUint32
	b.countReuseLocked()
	b.countDialLocked()
	c := b.countersLocked()
	assert.Equal(t, int64(1)<<32, c.Reuses)
	assert.Equal(t, int64(1)<<32, c.Dials)
	b.countReuseLocked()
	assert.Equal(t, int64(1)<<32+1, b.countersLocked().Reuses)
	b.uncountReuseLocked()
	b.uncountReuseLocked()
	assert.Equal(t, int64(math.MaxUint32), b.countersLocked().Reuses, "taken back across the wrap")
	assert.Equal(t, int64(math.MaxUint32), b.takesLocked())
}
