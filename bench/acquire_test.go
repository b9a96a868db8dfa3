package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/puddle/v2"
	"github.com/seed73091bf1/connpool/clientpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"storj.io/drpc"
	"storj.io/drpc/drpcpool"
)

// fakeValue is a pooled client that does nothing, so that
// BenchmarkAcquireRelease measures the pools alone. It is a drpcpool.Conn,
// the strictest of the three pools' requirements, so that all of them hold
// the same type. Its Closed channel never closes and its Unblocked channel
// is closed: every pool that looks at them finds it alive and ready. The
// id only keeps values distinct; it is never read.
type fakeValue struct{ id int64 }

var _ drpcpool.Conn = (*fakeValue)(nil)

var (
	neverClosed = make(chan struct{})
	unblocked   = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
)

func (*fakeValue) Close() error               { return nil }
func (*fakeValue) Closed() <-chan struct{}    { return neverClosed }
func (*fakeValue) Unblocked() <-chan struct{} { return unblocked }

func (*fakeValue) Invoke(context.Context, string, drpc.Encoding, drpc.Message, drpc.Message) error {
	return errors.New("bench: fakeValue has no remote")
}

func (*fakeValue) NewStream(context.Context, string, drpc.Encoding) (drpc.Stream, error) {
	return nil, errors.New("bench: fakeValue has no remote")
}

// fakeDialer returns a dial function that makes fakeValues and counts its
// calls in dials.
func fakeDialer(dials *atomic.Int64) func(context.Context) (*fakeValue, error) {
	return func(context.Context) (*fakeValue, error) {
		return &fakeValue{id: dials.Add(1)}, nil
	}
}

// The pools of BenchmarkAcquireRelease, set alike where their options
// allow: room for 64 values, an idle timeout of a minute where the pool has
// one, one address or key.
const (
	acquireCapacity = 64
	acquireTimeout  = time.Minute
)

var acquireAddr = fakeAddr.String()

// acquirer is one pool of BenchmarkAcquireRelease. setup creates the pool
// with warm idle values dialed by dial, registers its Close with
// tb.Cleanup, and returns one acquire+release, which is safe to call from
// many goroutines.
type acquirer struct {
	name  string
	setup func(tb testing.TB, dial func(context.Context) (*fakeValue, error)) (op func() error)
}

var acquirers = []acquirer{
	{"clientpool", setupClientpool},
	{"puddle", setupPuddle},
	{"drpcpool", setupDrpcpool},
}

// setupClientpool leases with Get and returns with Lease.Close.
func setupClientpool(tb testing.TB, dial func(context.Context) (*fakeValue, error)) func() error {
	tb.Helper()
	p, err := clientpool.New(func(ctx context.Context, _ string) (*fakeValue, error) { return dial(ctx) },
		acquireCapacity, acquireTimeout)
	require.NoError(tb, err)
	tb.Cleanup(func() { assert.NoError(tb, p.Close()) })
	ctx := context.Background()
	require.NoError(tb, p.Warm(ctx, acquireAddr, warm))
	return func() error {
		l, err := p.Get(ctx, acquireAddr)
		if err != nil {
			return err
		}
		_ = l.Value()
		return l.Close()
	}
}

// setupPuddle acquires with Acquire and returns with Resource.Release.
// puddle pools one kind of resource, with no address, and has no idle
// timeout of its own.
func setupPuddle(tb testing.TB, dial func(context.Context) (*fakeValue, error)) func() error {
	tb.Helper()
	p, err := puddle.NewPool(&puddle.Config[*fakeValue]{
		Constructor: dial,
		Destructor:  func(v *fakeValue) { _ = v.Close() },
		MaxSize:     acquireCapacity,
	})
	require.NoError(tb, err)
	tb.Cleanup(p.Close)
	ctx := context.Background()
	for range warm {
		require.NoError(tb, p.CreateResource(ctx))
	}
	return func() error {
		r, err := p.Acquire(ctx)
		if err != nil {
			return err
		}
		_ = r.Value()
		r.Release()
		return nil
	}
}

// setupDrpcpool takes with Take and returns with Put. Take never dials:
// on a miss the op dials itself, as a caller of Take must.
func setupDrpcpool(tb testing.TB, dial func(context.Context) (*fakeValue, error)) func() error {
	tb.Helper()
	p := drpcpool.New[string, *fakeValue](drpcpool.Options{
		Expiration:  acquireTimeout,
		Capacity:    acquireCapacity,
		KeyCapacity: acquireCapacity,
	})
	tb.Cleanup(func() { assert.NoError(tb, p.Close()) })
	ctx := context.Background()
	for range warm {
		v, err := dial(ctx)
		require.NoError(tb, err)
		p.Put(acquireAddr, v)
	}
	return func() error {
		v, ok := p.Take(acquireAddr)
		if !ok {
			var err error
			if v, err = dial(ctx); err != nil {
				return err
			}
		}
		p.Put(acquireAddr, v)
		return nil
	}
}

// BenchmarkAcquireRelease takes an idle value of one address and returns
// it, through generic pools of clients (clientpool, puddle, drpcpool),
// on fakeValues.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, a := range acquirers {
		b.Run("Pool="+a.name, func(b *testing.B) {
			modes(b, func(b *testing.B, parallel bool) {
				var dials atomic.Int64
				op := a.setup(b, fakeDialer(&dials))
				run(b, parallel, func(int) { must(b, op()) })
			})
		})
	}
}

// TestAcquireReleaseReusesWarmValues checks that BenchmarkAcquireRelease
// measures the hit path: once warmed, no pool dials again.
func TestAcquireReleaseReusesWarmValues(t *testing.T) {
	for _, a := range acquirers {
		t.Run(a.name, func(t *testing.T) {
			var dials atomic.Int64
			op := a.setup(t, fakeDialer(&dials))
			require.EqualValues(t, warm, dials.Load(), "dials while warming")
			for range 100 {
				require.NoError(t, op())
			}
			assert.EqualValues(t, warm, dials.Load(), "dials after warming")
		})
	}
}
