package connpool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/internal/testnet"
)

// newLifetimePool returns a pool on a fake clock whose conns live for an
// hour. The real cleaner would first tick after 15 minutes; tests call sweep
// themselves.
func newLifetimePool(t *testing.T, d *testnet.FakeDialer) (*Pool, *fakeClock) {
	t.Helper()
	clock := new(fakeClock)
	clock.advance(time.Hour)
	p, err := New(d.Dial, 256, 0, WithMaxLifetime(time.Hour), withClock(clock))
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p, clock
}

// Regression: pgx #1437 recomputed the lifetime jitter on every return, so
// conns dialed together still expired together.
func TestLifetimeJitterIsBoundedAndFixedAtDial(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLifetimePool(t, &d)
	dialedAt := clock.read()

	const n = 200
	deadlines := make(map[int64]bool)
	var conns []*Conn
	for range n {
		c, err := p.New("a:1")
		require.NoError(t, err)
		h := c.(*Conn)
		conns = append(conns, h)
		dl := h.load().deadline
		assert.GreaterOrEqual(t, dl, dialedAt+int64(time.Hour)*9/10, "jitter is at most 10%")
		assert.LessOrEqual(t, dl, dialedAt+int64(time.Hour), "no conn lives longer than the max")
		deadlines[dl] = true
	}
	assert.Greater(t, len(deadlines), n/2, "conns dialed together get different lifetimes")

	before := make(map[*pconn]int64)
	for _, c := range conns {
		before[c.load()] = c.load().deadline
		require.NoError(t, c.Close())
	}
	clock.advance(time.Minute)
	for range n {
		c, err := p.Get("a:1")
		require.NoError(t, err)
		pc := c.(*Conn).load()
		assert.Equal(t, before[pc], pc.deadline, "the lifetime is fixed at dial")
		defer c.Close()
	}
}

func TestGetNeverHandsOutConnPastMaxLifetime(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLifetimePool(t, &d)

	c, err := p.Get("a:1")
	require.NoError(t, err)
	deadline := c.(*Conn).load().deadline
	require.NoError(t, c.Close())

	clock.set(deadline - 1)
	c2, err := p.Get("a:1")
	require.NoError(t, err)
	assert.Equal(t, c.LocalAddr(), c2.LocalAddr(), "just before its deadline: reused")
	require.NoError(t, c2.Close())

	clock.set(deadline)
	c3, err := p.Get("a:1")
	require.NoError(t, err)
	defer c3.Close()
	assert.NotEqual(t, c.LocalAddr(), c3.LocalAddr(), "at its deadline: not handed out")
	p.closers.Wait() // Get closes discarded conns in the background
	s := p.Stats()
	assert.EqualValues(t, 1, s.ClosedMaxLifetime)
	assert.EqualValues(t, 1, s.Total)
	assert.EqualValues(t, 1, d.Conns()[0].Closes.Load())
}

// Regression: pgx #2560 kept busy conns past their lifetime forever, because
// only idle conns were checked.
func TestBusyConnPastMaxLifetimeIsClosedWhenReturned(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLifetimePool(t, &d)

	c, err := p.Get("a:1")
	require.NoError(t, err)
	clock.advance(2 * time.Hour) // busy all along
	require.NoError(t, c.Close())

	s := p.Stats()
	assert.EqualValues(t, 1, s.ClosedMaxLifetime)
	assert.EqualValues(t, 0, s.Total)
	assert.EqualValues(t, 0, d.Open())
}

func TestSweepClosesIdleConnsPastMaxLifetime(t *testing.T) {
	var d testnet.FakeDialer
	p, clock := newLifetimePool(t, &d)

	old, err := p.Get("a:1")
	require.NoError(t, err)
	clock.advance(30 * time.Minute)
	young, err := p.New("a:1")
	require.NoError(t, err)
	require.NoError(t, old.Close())
	require.NoError(t, young.Close())

	clock.advance(31 * time.Minute) // old is 61 minutes old, young 31
	p.sweep(clock.read())
	s := p.Stats()
	assert.EqualValues(t, 1, s.ClosedMaxLifetime)
	assert.EqualValues(t, 1, s.Idle)
	c, err := p.Get("a:1")
	require.NoError(t, err)
	assert.Equal(t, young.LocalAddr(), c.LocalAddr())
	require.NoError(t, c.Close())
}

func TestSweepIntervalFollowsTheShorterLimit(t *testing.T) {
	for _, tt := range []struct {
		name              string
		timeout, lifetime time.Duration
		want              time.Duration
	}{
		{"neither", 0, 0, time.Minute},
		{"timeout only", 40 * time.Millisecond, 0, 10 * time.Millisecond},
		{"lifetime only", 0, 8 * time.Second, 2 * time.Second},
		{"lifetime shorter", time.Minute, 20 * time.Second, 5 * time.Second},
		{"timeout shorter", time.Second, time.Hour, 250 * time.Millisecond},
		{"floor", time.Microsecond, 0, time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, sweepInterval(tt.timeout, tt.lifetime))
		})
	}
}
