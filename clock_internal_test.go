package connpool

import (
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// newLaggingPool returns a pool on a fake clock whose coarse readings move
// only when the test publishes them, as if the cleaner's tick were late.
// The idle timeout is an hour, so the tick is maxTick and the margin twice
// that.
func newLaggingPool(t *testing.T, d *testnet.FakeDialer, opts ...Option) (*Pool, *fakeClock) {
	t.Helper()
	clock := &fakeClock{lag: true}
	clock.now.Store(int64(time.Hour))
	p, err := New(d.Dial, 4, time.Hour, append([]Option{withClock(clock)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	require.Equal(t, int64(2*maxTick), p.margin)
	return p, clock
}

// getAndReturn checks out a conn to address and returns it at once.
func getAndReturn(t *testing.T, p *Pool, address string) net.Conn {
	t.Helper()
	c, err := p.Get(address)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	return c
}

func TestHitPathReadsNoClock(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLaggingPool(t, &d, WithMaxLifetime(2*time.Hour), WithValidator(func(net.Conn) error { return nil }, 0))
	getAndReturn(t, p, "a:1")
	clock.advance(time.Minute)
	clock.publish(clock.read())

	before := clock.reads.Load()
	for range 10 {
		getAndReturn(t, p, "a:1")
	}
	assert.Equal(t, before, clock.reads.Load(), "Get and Close of a conn far from every limit read no clock")
	assert.EqualValues(t, 1, d.Dials())
}

func TestConnNearTheTimeoutIsJudgedOnAnExactReading(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLaggingPool(t, &d)
	c := getAndReturn(t, p, "a:1")

	// An hour passes, but the coarse clock lags by less than the margin:
	// by it the conn is an hour less 400 ms idle, within the margin of the
	// timeout, so Get reads the clock and finds it expired.
	clock.advance(time.Hour)
	clock.publish(clock.read() - int64(400*time.Millisecond))
	c2, err := p.Get("a:1")
	require.NoError(t, err)
	defer c2.Close()
	assert.NotEqual(t, c.LocalAddr(), c2.LocalAddr(), "idle for the timeout: not handed out")
	p.closers.Wait()
	assert.EqualValues(t, 1, p.Stats().ClosedIdleTimeout)
	assert.Equal(t, clock.read(), p.coarse.Load(), "the exact reading advances the coarse clock")
}

func TestConnFarFromTheTimeoutIsReusedOnTheCoarseReading(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLaggingPool(t, &d)
	c := getAndReturn(t, p, "a:1")

	// By the coarse clock the conn is more than the margin from its
	// timeout, so Get takes it without a reading.
	clock.advance(time.Hour - time.Second)
	clock.publish(clock.read() - int64(100*time.Millisecond))
	before := clock.reads.Load()
	c2, err := p.Get("a:1")
	require.NoError(t, err)
	defer c2.Close()
	assert.Equal(t, c.LocalAddr(), c2.LocalAddr())
	assert.Equal(t, before, clock.reads.Load())
	assert.Equal(t, time.Hour-time.Second-100*time.Millisecond, c2.(*Conn).IdleTime(),
		"IdleTime is the coarse idle time")
}

// The guarantee holds only while the coarse clock lags by less than the
// margin; this test pins down what happens past it, as the package
// documents: a stalled cleaner lets an expired conn through.
func TestCoarseClockLaggingPastTheMarginLetsAnExpiredConnThrough(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLaggingPool(t, &d)
	c := getAndReturn(t, p, "a:1")

	clock.advance(time.Hour)
	clock.publish(clock.read() - int64(time.Minute)) // the cleaner stalled for a minute
	c2, err := p.Get("a:1")
	require.NoError(t, err)
	defer c2.Close()
	assert.Equal(t, c.LocalAddr(), c2.LocalAddr())
}

func TestConnNearItsMaxLifetimeIsJudgedOnAnExactReading(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLaggingPool(t, &d, WithMaxLifetime(30*time.Minute))
	c, err := p.Get("a:1")
	require.NoError(t, err)
	deadline := c.(*Conn).load().deadline
	require.NoError(t, c.Close())

	clock.set(deadline)
	clock.publish(deadline - int64(maxTick)) // within the margin
	c2, err := p.Get("a:1")
	require.NoError(t, err)
	defer c2.Close()
	assert.NotEqual(t, c.LocalAddr(), c2.LocalAddr(), "at its deadline: not handed out")
	p.closers.Wait()
	assert.EqualValues(t, 1, p.Stats().ClosedMaxLifetime)
}

func TestValidatorMinIdleIsJudgedOnAnExactReading(t *testing.T) {
	var d testnet.FakeDialer
	validated := 0
	validate := func(net.Conn) error { validated++; return nil }
	p, clock := newLaggingPool(t, &d, WithValidator(validate, time.Minute))
	getAndReturn(t, p, "a:1")

	// A minute passes; the coarse clock says 59.7 s, within the margin of
	// the validator's minimum idle time: the exact reading says a minute.
	clock.advance(time.Minute)
	clock.publish(clock.read() - int64(300*time.Millisecond))
	getAndReturn(t, p, "a:1")
	assert.Equal(t, 1, validated, "idle for a minute: validated")

	// 30 s on the coarse clock is far from the minimum: no reading, no
	// validation.
	clock.advance(30 * time.Second)
	clock.publish(clock.read())
	before := clock.reads.Load()
	getAndReturn(t, p, "a:1")
	assert.Equal(t, 1, validated)
	assert.Equal(t, before, clock.reads.Load())
}

func TestCloseStampsWithTheCoarseClock(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLaggingPool(t, &d)
	c, err := p.Get("a:1")
	require.NoError(t, err)

	// The conn is held for 50 minutes; the coarse clock follows. Its
	// stamp is the coarse reading at Close, not the checkout's.
	clock.advance(50 * time.Minute)
	clock.publish(clock.read())
	require.NoError(t, c.Close())
	clock.advance(20 * time.Minute)
	clock.publish(clock.read())

	c2, err := p.Get("a:1")
	require.NoError(t, err)
	defer c2.Close()
	assert.Equal(t, c.LocalAddr(), c2.LocalAddr(), "idle 20 minutes, not 70")
	assert.Equal(t, 20*time.Minute, c2.(*Conn).IdleTime())
}

func TestCleanerTicksAdvanceTheCoarseClock(t *testing.T) {
	var d testnet.FakeDialer
	p, err := New(d.Dial, 4, 16*time.Millisecond) // a tick of 1 ms
	require.NoError(t, err)
	defer p.Close()
	start := p.coarse.Load()
	assert.Eventually(t, func() bool { return p.coarse.Load() > start+int64(5*time.Millisecond) },
		5*time.Second, time.Millisecond)
}

func TestTickFor(t *testing.T) {
	for _, tt := range []struct {
		name  string
		limit time.Duration
		want  time.Duration
	}{
		{"no limit", 0, quietTick},
		{"short", time.Millisecond, time.Millisecond},
		{"a sixteenth", 160 * time.Millisecond, 10 * time.Millisecond},
		{"long", time.Hour, maxTick},
	} {
		t.Run(tt.name, func(t *testing.T) { assert.Equal(t, tt.want, tickFor(tt.limit)) })
	}
	assert.Equal(t, time.Duration(0), shortestLimit(0, 0))
	assert.Equal(t, time.Second, shortestLimit(0, time.Second, time.Minute))
}

// Regression: Close judged a conn's lifetime on the coarse reading alone,
// and handed a conn up to a tick past its deadline to a waiting Get.
func TestReturnedConnNearItsDeadlineIsJudgedOnAnExactReading(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLaggingPool(t, &d, WithMaxLifetime(30*time.Minute), WithMaxActive(1))
	c1, err := p.Get("a:1")
	require.NoError(t, err)
	deadline := c1.(*Conn).load().deadline

	got := make(chan net.Conn, 1)
	go func() {
		c, err := p.Get("a:1") // waits at the cap
		assert.NoError(t, err)
		got <- c
	}()
	b := c1.(*Conn).info.b
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.waitingLocked() == 1
	}, 5*time.Second, time.Millisecond)

	clock.set(deadline + int64(time.Millisecond))
	clock.publish(deadline + int64(time.Millisecond) - int64(maxTick)) // lags by a tick, within the margin
	require.NoError(t, c1.Close())

	c2 := <-got
	defer c2.Close()
	assert.NotEqual(t, c1.LocalAddr(), c2.LocalAddr(), "the waiter got the conn past its lifetime")
	assert.Less(t, clock.read(), c2.(*Conn).load().deadline)
}

// Regression: a checkout kept the reading it took before a validator ran,
// and judged the next idle conn on it after the validator rejected one,
// however long the validator took.
func TestCheckoutTakesANewReadingAfterAValidatorRejectsAConn(t *testing.T) {
	var d testnet.FakeDialer
	clock := new(fakeClock)
	clock.advance(time.Hour)
	validations := 0
	slow := false
	validate := func(net.Conn) error {
		validations++
		if slow {
			slow = false
			clock.advance(2 * time.Minute) // the ping took two minutes
			return errors.New("rejected")
		}
		return nil
	}
	p, err := New(d.Dial, 4, time.Hour, withClock(clock), WithValidator(validate, 0))
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })

	older, err := p.Get("a:1")
	require.NoError(t, err)
	newer, err := p.Get("a:1")
	require.NoError(t, err)
	require.NoError(t, older.Close()) // the bottom of the stack
	clock.advance(59 * time.Minute)
	require.NoError(t, newer.Close()) // the top

	slow = true
	c, err := p.Get("a:1")
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, 1, validations, "the older conn, idle for 61 minutes, is not even validated")
	assert.NotEqual(t, older.LocalAddr(), c.LocalAddr(), "a conn idle for the timeout was handed out")
}

// Regression: with a validator as the pool's only time limit, the coarse
// clock ticked once a second, so a conn returned a millisecond earlier
// could look idle for most of a second and be validated before minIdle.
func TestValidatorMinIdleSetsTheTick(t *testing.T) {
	var d testnet.FakeDialer
	clock := &fakeClock{lag: true}
	clock.now.Store(int64(time.Hour))
	validated := 0
	validate := func(net.Conn) error { validated++; return nil }
	p, err := New(d.Dial, 4, 0, withClock(clock), WithValidator(validate, 500*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	tick := 500 * time.Millisecond / 16
	require.Equal(t, int64(2*tick), p.margin)

	c, err := p.Get("a:1")
	require.NoError(t, err)
	clock.advance(tick - time.Millisecond) // the coarse clock lags by less than a tick
	require.NoError(t, c.Close())
	clock.advance(time.Millisecond)

	c2, err := p.Get("a:1") // a millisecond after the return
	require.NoError(t, err)
	defer c2.Close()
	assert.Zero(t, validated, "idle a millisecond, judged %v", c2.(*Conn).IdleTime())
}

// acquireBlocked reports whether a goroutine is inside
// bucket.acquire, blocked on a mutex (its coarse reading already taken).
func acquireBlocked() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "connpool.(*bucket).acquire") && strings.Contains(g, "sync.(*Mutex).Lock") {
			return true
		}
	}
	return false
}

// Regression: a Get that waited for its bucket's lock judged the idle conns
// on the coarse reading it took before it waited, and handed out a conn
// idle for twice the timeout while the coarse clock was current.
func TestGetJudgesIdleConnsOnAReadingTakenUnderTheLock(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newTestPool(t, &d, 4) // idle timeout: one hour

	c, err := p.Get("a:1")
	require.NoError(t, err)
	first := c.LocalAddr()
	require.NoError(t, c.Close())

	b := p.buckets.lookup("a:1")
	b.mu.Lock() // another checkout or return of the address holds the lock
	got := make(chan checkoutResult, 1)
	go func() {
		c, err := p.Get("a:1")
		got <- checkoutResult{c, err}
	}()
	for i := 0; !acquireBlocked(); i++ {
		if i > 1_000_000 {
			b.mu.Unlock()
			t.Fatal("the Get never reached the bucket's lock")
		}
		runtime.Gosched()
	}
	clock.advance(2 * time.Hour) // published: the coarse clock is up to date
	b.mu.Unlock()

	r := <-got
	require.NoError(t, r.err)
	defer r.c.Close()
	assert.NotEqual(t, first, r.c.LocalAddr(),
		"Get handed out a conn idle for %v with a %v idle timeout (IdleTime says %v)",
		2*time.Hour, time.Hour, r.c.(*Conn).IdleTime())
}

type checkoutResult struct {
	c   net.Conn
	err error
}
