package clientpool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/clientpool"
)

func TestSharedRejectsBadLimit(t *testing.T) {
	var d dialer
	for _, n := range []int{0, -1} {
		_, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithShared(n))
		assert.ErrorIs(t, err, clientpool.ErrInvalidConfig, "WithShared(%d)", n)
	}
}

// leaseAll takes n leases of address.
func leaseAll[T io.Closer](t *testing.T, p *clientpool.Pool[T], address string, n int) []*clientpool.Lease[T] {
	t.Helper()
	out := make([]*clientpool.Lease[T], n)
	for i := range out {
		l, err := p.Get(context.Background(), address)
		require.NoError(t, err)
		out[i] = l
	}
	return out
}

func TestSharedLeasesShareAValueUpToTheLimit(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(3))
	ls := leaseAll(t, p, "a", 4)
	v := ls[0].Value()
	assert.Same(t, v, ls[1].Value())
	assert.Same(t, v, ls[2].Value())
	assert.NotSame(t, v, ls[3].Value(), "a fourth lease went over the limit of 3")
	assert.Equal(t, 2, d.dials())
	s := destinationOf(p, "a")
	assert.EqualValues(t, 2, s.Shared)
	assert.EqualValues(t, 4, s.Leases)
	assert.EqualValues(t, 3, s.PeakLeases)
	assert.EqualValues(t, 2, s.InUse)
	for _, l := range ls {
		require.NoError(t, l.Close())
	}
	s = destinationOf(p, "a")
	assert.EqualValues(t, 0, s.Shared)
	assert.EqualValues(t, 0, s.Leases)
	assert.EqualValues(t, 2, s.Idle, "values whose last lease ended are idle")
	assert.Equal(t, 0, d.closedCount())
}

func destinationOf[T io.Closer](p *clientpool.Pool[T], address string) clientpool.DestinationStats {
	for _, d := range p.Stats().Destinations {
		if d.Address == address {
			return d
		}
	}
	return clientpool.DestinationStats{}
}

func (d *dialer) closedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.clients {
		if c.closed.Load() {
			n++
		}
	}
	return n
}

func TestSharedGetTakesTheLeastLoadedValue(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(8))
	ctx := context.Background()
	a, err := p.Get(ctx, "a")
	require.NoError(t, err)
	b, err := p.GetFresh(ctx, "a") // a second value
	require.NoError(t, err)
	va, vb := a.Value(), b.Value()
	require.NotSame(t, va, vb)

	// Loads 1 and 1: six more leases alternate, whichever comes first.
	load := map[*client]int{va: 1, vb: 1}
	var ls []*clientpool.Lease[*client]
	for range 6 {
		l, err := p.Get(ctx, "a")
		require.NoError(t, err)
		load[l.Value()]++
		ls = append(ls, l)
		assert.LessOrEqual(t, load[va]-load[vb], 1)
		assert.LessOrEqual(t, load[vb]-load[va], 1)
	}
	assert.Equal(t, 4, load[va])
	assert.Equal(t, 4, load[vb])

	// End three leases of va: the next three go to va, the lighter one.
	ended := 0
	for _, l := range ls {
		if ended < 3 && l.Value() == va {
			require.NoError(t, l.Close())
			ended++
		}
	}
	require.NoError(t, a.Close())
	for range 3 {
		l, err := p.Get(ctx, "a")
		require.NoError(t, err)
		assert.Same(t, va, l.Value(), "a lease went to the busier value")
		defer l.Close()
	}
	assert.Equal(t, 2, d.dials())
	_ = b
}

func TestSharedWaitersGetSharesInArrivalOrder(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(2), clientpool.WithMaxActive(1))
	held := leaseAll(t, p, "a", 2)

	const n = 4
	got := make(chan int, n)
	leases := make(chan *clientpool.Lease[*client], n)
	for i := range n {
		go func() {
			l, err := p.Get(context.Background(), "a")
			if !assert.NoError(t, err) {
				got <- -1
				return
			}
			got <- i
			leases <- l
		}()
		require.Eventually(t, func() bool { return p.Stats().Waiting == int64(i+1) }, 10*time.Second, time.Millisecond)
	}
	// Each ended lease serves the oldest waiter.
	for i := range n {
		var l *clientpool.Lease[*client]
		if i < len(held) {
			l = held[i]
		} else {
			l = <-leases
		}
		require.NoError(t, l.Close())
		assert.Equal(t, i, <-got, "waiter %d was not served next", i)
	}
	for range 2 {
		require.NoError(t, (<-leases).Close())
	}
	assert.Equal(t, 1, d.dials())
	s := destinationOf(p, "a")
	assert.EqualValues(t, n, s.WaitCount)
	assert.EqualValues(t, 2, s.PeakLeases)
}

func TestSharedWaiterTimesOut(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(1), clientpool.WithMaxActive(1),
		clientpool.WithWaitTimeout(20*time.Millisecond))
	l := leaseAll(t, p, "a", 1)[0]
	v := l.Value()
	_, err := p.Get(context.Background(), "a")
	assert.ErrorIs(t, err, clientpool.ErrExhausted)
	require.NoError(t, l.Close())
	l2 := leaseAll(t, p, "a", 1)[0]
	assert.Same(t, v, l2.Value())
	require.NoError(t, l2.Close())
}

func TestSharedReleasedValueTakesNoLeaseAndClosesAfterItsLast(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(4))
	ls := leaseAll(t, p, "a", 3)
	broken := ls[0].Value()
	require.NoError(t, ls[0].Release())
	assert.False(t, broken.closed.Load(), "closed while leases still use it")

	l, err := p.Get(context.Background(), "a")
	require.NoError(t, err)
	assert.NotSame(t, broken, l.Value(), "a released value took a new lease")
	assert.Equal(t, 2, d.dials())

	require.NoError(t, ls[1].Close())
	assert.False(t, broken.closed.Load())
	require.NoError(t, ls[2].Close())
	assert.True(t, broken.closed.Load(), "not closed after its last lease")
	assert.EqualValues(t, 1, p.Stats().Released)
	assert.Equal(t, int64(1), p.Stats().Total)
	require.NoError(t, l.Close())
	assert.Equal(t, int32(1), broken.closes.Load())
}

func TestSharedReleaseNowClosesAtOnce(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(4))
	ls := leaseAll(t, p, "a", 3)
	v := ls[0].Value()
	require.NoError(t, ls[1].ReleaseNow())
	assert.True(t, v.closed.Load(), "ReleaseNow left the value open")
	assert.EqualValues(t, 0, p.Stats().Total, "a closed value still counts")
	assert.ErrorIs(t, ls[1].Close(), clientpool.ErrLeaseEnded)

	l, err := p.Get(context.Background(), "a")
	require.NoError(t, err)
	assert.NotSame(t, v, l.Value())
	require.NoError(t, ls[0].Close())
	require.NoError(t, ls[2].Release())
	require.NoError(t, l.Close())
	assert.Equal(t, int32(1), v.closes.Load(), "closed more than once")
	assert.EqualValues(t, 1, p.Stats().Released)
}

func TestSharedValueRetiresGracefullyAtItsLifetime(t *testing.T) {
	var d dialer
	const lifetime = 30 * time.Millisecond
	p := newPool(t, &d, clientpool.WithShared(4), clientpool.WithMaxLifetime(lifetime))
	old := leaseAll(t, p, "a", 1)[0]
	v := old.Value()
	var next *clientpool.Lease[*client]
	require.Eventually(t, func() bool {
		l, err := p.Get(context.Background(), "a")
		require.NoError(t, err)
		if l.Value() != v {
			next = l
			return true
		}
		require.NoError(t, l.Close())
		return false
	}, 10*time.Second, time.Millisecond, "the value kept taking leases past its lifetime")
	assert.False(t, v.closed.Load(), "closed while a lease still used it")
	require.NoError(t, old.Close())
	assert.True(t, v.closed.Load(), "not closed at its last lease")
	assert.EqualValues(t, 1, p.Stats().ClosedMaxLifetime)
	require.NoError(t, next.Close())
}

func TestSharedValueWhoseClosedChannelClosedLeavesRotation(t *testing.T) {
	var d notifyingDialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithShared(4))
	require.NoError(t, err)
	defer p.Close()
	ls := leaseAll(t, p, "a", 2)
	v := ls[0].Value()
	close(v.dead)
	l, err := p.Get(context.Background(), "a")
	require.NoError(t, err)
	assert.NotSame(t, v, l.Value(), "a dead value took a new lease")
	for _, l := range ls {
		require.NoError(t, l.Close())
	}
	assert.EqualValues(t, 1, p.Stats().ClosedDeadAtCheckout)
	assert.EqualValues(t, 1, p.Stats().Total)
	require.NoError(t, l.Close())
}

func TestSharedDrainRetiresValuesInUse(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(4))
	old := leaseAll(t, p, "a", 2)
	v := old[0].Value()
	require.NoError(t, p.Drain("a"))
	l, err := p.Get(context.Background(), "a")
	require.NoError(t, err)
	assert.NotSame(t, v, l.Value(), "a drained value took a new lease")
	for _, o := range old {
		require.NoError(t, o.Close())
	}
	assert.True(t, v.closed.Load())
	assert.EqualValues(t, 1, p.Stats().ClosedDrained)
	require.NoError(t, l.Close())
}

func TestSharedIdleTimeoutCountsFromTheLastLease(t *testing.T) {
	var d dialer
	p, err := clientpool.New(d.dial, 4, time.Hour, clientpool.WithShared(4))
	require.NoError(t, err)
	defer p.Close()
	ls := leaseAll(t, p, "a", 2)
	require.NoError(t, ls[0].Close())
	assert.EqualValues(t, 0, destinationOf(p, "a").Idle, "idle while a lease still holds it")
	require.NoError(t, ls[1].Close())
	assert.EqualValues(t, 1, destinationOf(p, "a").Idle)
	l := leaseAll(t, p, "a", 1)[0]
	assert.True(t, l.Reused())
	assert.Less(t, l.IdleTime(), time.Minute)
	require.NoError(t, l.Close())
}

func TestSharedDoRetriesIdempotentCallsOnAnotherValue(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(4))
	held := leaseAll(t, p, "a", 1)[0]
	broken := held.Value()
	errConn := fmt.Errorf("call: %w", io.ErrUnexpectedEOF)
	var calls []*client
	err := p.Do(context.Background(), "a", func(c *client) error {
		calls = append(calls, c)
		if c == broken {
			return errConn
		}
		return nil
	}, clientpool.Idempotent())
	require.NoError(t, err)
	require.Len(t, calls, 2)
	assert.Same(t, broken, calls[0])
	assert.NotSame(t, broken, calls[1])
	assert.False(t, broken.closed.Load(), "closed while a lease still used it")
	require.NoError(t, held.Close())
	assert.True(t, broken.closed.Load())
}

func TestSharedPoolCloseClosesValuesAtTheirLastLease(t *testing.T) {
	var d dialer
	p, err := clientpool.New(d.dial, 4, time.Minute, clientpool.WithShared(4), clientpool.WithMaxActive(1))
	require.NoError(t, err)
	ls := leaseAll(t, p, "a", 4)
	waited := make(chan error, 1)
	go func() {
		_, err := p.Get(context.Background(), "a")
		waited <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, p.Close())
	assert.ErrorIs(t, <-waited, clientpool.ErrClosed)
	v := ls[0].Value()
	for i, l := range ls {
		assert.False(t, v.closed.Load(), "closed with %d leases left", len(ls)-i)
		require.NoError(t, l.Close())
	}
	assert.True(t, v.closed.Load())
	assert.Equal(t, 0, d.open())
}

// sharedClient counts the leases using it and records the most at once,
// and whether it was used after its close.
type sharedClient struct {
	client
	inUse, peak        atomic.Int32
	killed, usedClosed atomic.Bool // killed: a lease called ReleaseNow
}

func (c *sharedClient) use() {
	if c.closed.Load() && !c.killed.Load() {
		c.usedClosed.Store(true)
	}
	n := c.inUse.Add(1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
}

func (c *sharedClient) done() { c.inUse.Add(-1) }

func TestSharedStress(t *testing.T) {
	const limit = 4
	var (
		mu  sync.Mutex
		all []*sharedClient
	)
	dial := func(_ context.Context, address string) (*sharedClient, error) {
		mu.Lock()
		defer mu.Unlock()
		c := &sharedClient{client: client{id: int64(len(all) + 1), address: address}}
		all = append(all, c)
		return c, nil
	}
	p, err := clientpool.New(dial, 2, 50*time.Millisecond, clientpool.WithShared(limit),
		clientpool.WithMaxActive(3), clientpool.WithWaitTimeout(time.Second),
		clientpool.WithMaxLifetime(40*time.Millisecond))
	require.NoError(t, err)

	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for g := range 12 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			addr := []string{"a", "b"}[g%2]
			for i := 0; i < 400 && time.Now().Before(deadline); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(3000))*time.Microsecond)
				var (
					l   *clientpool.Lease[*sharedClient]
					err error
				)
				if r.IntN(10) == 0 {
					l, err = p.GetFresh(ctx, addr)
				} else {
					l, err = p.Get(ctx, addr)
				}
				cancel()
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, clientpool.ErrExhausted) {
						t.Errorf("Get: %v", err)
					}
					continue
				}
				v := l.Value()
				v.use()
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
				}
				v.done()
				switch r.IntN(20) {
				case 0:
					_ = l.Release()
				case 1:
					v.killed.Store(true)
					_ = l.ReleaseNow()
				case 2:
					_ = p.Drain(addr)
					_ = l.Close()
				default:
					_ = l.Close()
				}
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	assert.EqualValues(t, 0, s.Leases)
	assert.EqualValues(t, 0, s.Shared)
	assert.EqualValues(t, 0, s.InUse)
	require.NoError(t, p.Close())
	mu.Lock()
	defer mu.Unlock()
	for _, c := range all {
		assert.LessOrEqual(t, c.peak.Load(), int32(limit), "client %d held by too many leases", c.id)
		assert.False(t, c.usedClosed.Load(), "client %d used after its close", c.id)
		assert.Equal(t, int32(1), c.closes.Load(), "client %d closed %d times", c.id, c.closes.Load())
	}
	t.Logf("%d clients", len(all))
}

func TestSharedValidatorRunsOnlyOnIdleValues(t *testing.T) {
	var d dialer
	var validated atomic.Int32
	p := newPool(t, &d, clientpool.WithShared(4),
		clientpool.WithValidator(func(*client) error {
			validated.Add(1)
			return errors.New("rejected")
		}, 0))
	ls := leaseAll(t, p, "a", 3)
	v := ls[0].Value()
	assert.Same(t, v, ls[1].Value())
	assert.Same(t, v, ls[2].Value())
	assert.Zero(t, validated.Load(), "the validator ran on a value in use")
	assert.False(t, v.closed.Load(), "a value in use was closed")
	assert.Equal(t, 1, d.dials())
	for _, l := range ls {
		require.NoError(t, l.Close())
	}
	// Idle now: the next lease runs the validator, which rejects it.
	l := leaseAll(t, p, "a", 1)[0]
	assert.NotSame(t, v, l.Value())
	assert.EqualValues(t, 1, validated.Load())
	assert.Eventually(t, v.closed.Load, 10*time.Second, time.Millisecond, "the rejected value was not closed")
	require.NoError(t, l.Close())
}

// A checkout waiting at the WithMaxTotal cap takes a share that frees at
// its address rather than waiting for a slot.
func TestSharedMaxTotalWaiterTakesAFreedShare(t *testing.T) {
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(2), clientpool.WithMaxTotal(1),
		clientpool.WithWaitTimeout(10*time.Second))
	ls := leaseAll(t, p, "a", 2) // both on the one value the cap allows
	require.Same(t, ls[0].Value(), ls[1].Value())
	v := ls[0].Value()

	got := make(chan *clientpool.Lease[*client], 1)
	go func() {
		l, err := p.Get(context.Background(), "a")
		assert.NoError(t, err)
		got <- l
	}()
	require.Eventually(t, func() bool { return p.Stats().Waiting > 0 }, 10*time.Second, time.Millisecond)
	require.NoError(t, ls[0].Close()) // a share frees on the value in rotation
	l := <-got
	require.NotNil(t, l)
	assert.Same(t, v, l.Value())
	assert.EqualValues(t, 1, d.dials())
	require.NoError(t, l.Close())
	require.NoError(t, ls[1].Close())
}
