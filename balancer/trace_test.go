package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// eventLog records the events of a balancer.Trace, one line each.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(format string, args ...any) {
	l.mu.Lock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *eventLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

func (l *eventLog) trace() *balancer.Trace {
	return &balancer.Trace{
		Pick: func(a string, err error) {
			if err != nil {
				l.add("pick error")
				return
			}
			l.add("pick %s", a)
		},
		Ejected: func(i balancer.EjectionInfo) { l.add("ejected %s %s", i.Address, i.Reason) },
		Readmitted: func(a string, out time.Duration) {
			l.add("readmitted %s after>=15ms=%t", a, out >= 15*time.Millisecond)
		},
		Retry: func(i balancer.RetryInfo) { l.add("retry %s same=%t", i.Address, i.SameAddress) },
	}
}

// fakeBackends returns a pool whose dials to "dead" fail and to any other
// address make fake conns.
func fakeBackends(t *testing.T) *connpool.Pool {
	t.Helper()
	d := &testnet.FakeDialer{}
	dial := func(a string) (net.Conn, error) {
		if a == "dead" {
			return nil, errors.New("connection refused")
		}
		return d.Dial(a)
	}
	p, err := connpool.New(dial, 4, time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestTraceReportsPicksEjectionsReadmissionsAndRetries(t *testing.T) {
	var log eventLog
	p := fakeBackends(t)
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "a"}, {Address: "dead"}},
		balancer.WithEjection(1, 20*time.Millisecond, 20*time.Millisecond))
	bp := balancer.NewPool(p, rr, balancer.WithTrace(log.trace()))

	// Round robin takes turns: within two Gets, one picks the dead
	// backend, whose dial fails, ejects it and moves on.
	for range 2 {
		c, err := bp.Get(context.Background())
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	events := log.take()
	assert.Contains(t, strings.Join(events, ","), "pick dead,ejected dead consecutive_failures,retry dead same=false,pick a")
	assert.Len(t, events, 5, "%q", events)

	// The re-admission's timer reports it once it released the set's lock.
	var readmitted []string
	eventuallyTrue(t, func() bool {
		readmitted = append(readmitted, log.take()...)
		return len(readmitted) > 0
	}, "re-admitted")
	assert.False(t, state(rr.States(), "dead").Ejected)
	assert.Equal(t, []string{"readmitted dead after>=15ms=true"}, readmitted)

	// A stale reused conn is retried on a fresh conn to the same backend.
	rr.Update([]balancer.Endpoint{{Address: "a"}})
	log.take()
	calls := 0
	err := bp.Do(context.Background(), func(c *balancer.Conn) error {
		if calls++; calls == 1 {
			require.True(t, c.Reused())
			return io.EOF
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"pick a", "retry a same=true"}, log.take())

	rr.Update(nil)
	_, err = bp.Get(context.Background())
	require.ErrorIs(t, err, balancer.ErrNoEndpoints)
	assert.Equal(t, []string{"pick error"}, log.take())
}

func TestTraceReportsOutlierEjections(t *testing.T) {
	var log eventLog
	p := fakeBackends(t)
	b := balancer.NewRoundRobin(endpoints(5), noConsecutive, balancer.WithMaxEjectedShare(0.5),
		balancer.WithOutlierDetection(balancer.OutlierDetection{
			Interval:          10 * time.Millisecond,
			FailurePercentage: &balancer.FailurePercentageEjection{RequestVolume: 5, MinimumHosts: 1, Threshold: 50, EnforcementPercentage: 100},
		}))
	balancer.NewPool(p, b, balancer.WithTrace(log.trace()))
	bad := endpoints(5)[2].Address
	eventuallyTrue(t, func() bool {
		for range 20 { // bad fails every request, the others none
			addr, done, err := b.Pick(context.Background())
			require.NoError(t, err)
			if addr == bad {
				done(errors.New("backend error"))
			} else {
				done(nil)
			}
		}
		return state(b.States(), bad).Ejected
	}, "the outlier is ejected")
	// The detection's timer reports the ejection once it released the
	// set's lock, a moment after the state shows it.
	var events []string
	eventuallyTrue(t, func() bool {
		events = append(events, log.take()...)
		return len(events) > 0
	}, "the ejection is reported")
	assert.Equal(t, []string{"ejected " + bad + " failure_percentage"}, events)
}

// TestTraceEjectionsMatchStatesUnderLoad fails requests at random from many
// goroutines and checks that every ejection and re-admission was reported
// once.
func TestTraceEjectionsMatchStatesUnderLoad(t *testing.T) {
	var ejected, readmitted, picks, pickErrors sync.Map
	inc := func(m *sync.Map, k string) {
		v, _ := m.LoadOrStore(k, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	get := func(m *sync.Map, k string) int64 {
		if v, ok := m.Load(k); ok {
			return v.(*atomic.Int64).Load()
		}
		return 0
	}
	tr := &balancer.Trace{
		Pick: func(a string, err error) {
			if err != nil {
				inc(&pickErrors, "")
			} else {
				inc(&picks, a)
			}
		},
		Ejected:    func(i balancer.EjectionInfo) { inc(&ejected, i.Address) },
		Readmitted: func(a string, _ time.Duration) { inc(&readmitted, a) },
	}
	p := fakeBackends(t)
	eps := endpoints(4)
	rr := balancer.NewRoundRobin(eps, balancer.WithEjection(2, time.Millisecond, 2*time.Millisecond),
		balancer.WithMaxEjectedShare(0.5))
	bp := balancer.NewPool(p, rr, balancer.WithTrace(tr))

	var wg sync.WaitGroup
	var gets atomic.Int64
	for g := range 4 {
		wg.Go(func() {
			deadline := time.Now().Add(200 * time.Millisecond)
			for i := 0; i < 500 && time.Now().Before(deadline); i++ {
				c, err := bp.Get(context.Background())
				if err != nil {
					continue
				}
				gets.Add(1)
				if (i+g)%3 != 0 { // two in three fail
					_ = c.(*balancer.Conn).CloseWithError(errors.New("backend error"))
				} else {
					_ = c.Close()
				}
			}
		})
	}
	wg.Wait()
	rr.Update(nil) // no ejection or re-admission after this one
	var allPicks int64
	for _, ep := range eps {
		allPicks += get(&picks, ep.Address)
	}
	assert.Equal(t, gets.Load(), allPicks, "one pick per Get: no dial fails here")
	assert.Zero(t, get(&pickErrors, ""))
	total := int64(0)
	for _, ep := range eps {
		total += get(&ejected, ep.Address)
		assert.LessOrEqual(t, get(&readmitted, ep.Address), get(&ejected, ep.Address), ep.Address)
	}
	assert.Positive(t, total, "the run ejected endpoints")
}

// TestTraceStatesEjectionsCount checks State.Ejections against the hook,
// which calls back into the balancer: it would deadlock under its lock.
func TestTraceStatesEjectionsCount(t *testing.T) {
	var n atomic.Int64
	p := fakeBackends(t)
	rr := balancer.NewRoundRobin(endpoints(3), balancer.WithEjection(1, time.Hour, time.Hour))
	balancer.NewPool(p, rr, balancer.WithTrace(&balancer.Trace{Ejected: func(balancer.EjectionInfo) {
		n.Add(1)
		rr.Update(endpoints(3)) // the same set: state is kept
	}}))
	fail(t, rr, endpoints(3)[1].Address, 1)
	assert.Equal(t, int64(1), n.Load())
	assert.Equal(t, int64(1), state(rr.States(), endpoints(3)[1].Address).Ejections)
}

func TestPanickingBalancerHookLeavesNoPickInFlight(t *testing.T) {
	p := fakeBackends(t)
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "a"}})
	var armed atomic.Bool
	boom := func() {
		if armed.CompareAndSwap(true, false) {
			panic("hook")
		}
	}
	bp := balancer.NewPool(p, rr, balancer.WithTrace(&balancer.Trace{
		Pick:  func(string, error) { boom() },
		Retry: func(balancer.RetryInfo) { boom() },
	}))
	mustPanic := func(fn func()) {
		t.Helper()
		defer func() { require.Equal(t, "hook", recover()) }()
		fn()
	}

	armed.Store(true)
	mustPanic(func() { _, _ = bp.Get(context.Background()) })
	assert.Zero(t, state(rr.States(), "a").InFlight, "the pick was ended")

	c, err := bp.Get(context.Background()) // leave an idle conn for Do
	require.NoError(t, err)
	require.NoError(t, c.Close())
	mustPanic(func() {
		_ = bp.Do(context.Background(), func(c *balancer.Conn) error {
			armed.Store(true) // the retry's hook panics
			return io.EOF
		})
	})
	assert.Zero(t, state(rr.States(), "a").InFlight, "the pick was ended")
	assert.Zero(t, destination(p, "a").InUse, "the stale conn was released")
}
