package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed73091bf1/connpool/balancer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeResolver answers from maps the test changes, and counts lookups.
type fakeResolver struct {
	mu      sync.Mutex
	hosts   map[string][]string
	srv     []*net.SRV
	err     error
	lookups atomic.Int64
}

func (r *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.lookups.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return nil, r.err
	}
	addrs, ok := r.hosts[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return append([]string(nil), addrs...), nil
}

func (r *fakeResolver) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	r.lookups.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return "", nil, r.err
	}
	return name, append([]*net.SRV(nil), r.srv...), nil
}

func (r *fakeResolver) set(host string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hosts == nil {
		r.hosts = map[string][]string{}
	}
	r.hosts[host] = addrs
}

func (r *fakeResolver) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// recorder is an Updater that keeps every set it was given.
type recorder struct {
	mu   sync.Mutex
	sets [][]balancer.Endpoint
}

func (r *recorder) Update(eps []balancer.Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, eps)
}

func (r *recorder) updates() [][]balancer.Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]balancer.Endpoint(nil), r.sets...)
}

func eps(addrs ...string) []balancer.Endpoint {
	out := make([]balancer.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = balancer.Endpoint{Address: a}
	}
	return out
}

func TestFirstResolutionRunsInTheConstructor(t *testing.T) {
	r := &fakeResolver{}
	r.set("svc", "10.0.0.2", "10.0.0.1")
	var u recorder
	w, err := NewDNS(context.Background(), "svc", "80", &u, WithResolver(r), WithInterval(time.Hour))
	require.NoError(t, err)
	defer w.Close()
	require.Equal(t, [][]balancer.Endpoint{eps("10.0.0.1:80", "10.0.0.2:80")}, u.updates(), "sorted, before NewDNS returned")
	assert.Equal(t, Stats{Resolutions: 1, Updates: 1, Endpoints: 2}, w.Stats())
}

func TestConstructorReturnsTheFirstError(t *testing.T) {
	r := &fakeResolver{}
	var u recorder
	_, err := NewDNS(context.Background(), "missing", "80", &u, WithResolver(r))
	var dnsErr *net.DNSError
	assert.ErrorAs(t, err, &dnsErr)
	r.set("empty")
	_, err = NewDNS(context.Background(), "empty", "80", &u, WithResolver(r))
	assert.ErrorIs(t, err, ErrNoEndpoints)
	assert.Empty(t, u.updates())
	_, err = NewDNS(context.Background(), "svc", "80", nil, WithResolver(r))
	assert.Error(t, err)
	_, err = NewDNS(context.Background(), "svc", "80", &u, WithResolver(r), WithInterval(0))
	assert.Error(t, err)
}

func TestUpdatesOnlyWhenTheSetChanges(t *testing.T) {
	r := &fakeResolver{}
	r.set("svc", "10.0.0.1", "10.0.0.2")
	var u recorder
	w, err := NewDNS(context.Background(), "svc", "80", &u, WithResolver(r),
		WithInterval(5*time.Millisecond), WithMinResolveInterval(0))
	require.NoError(t, err)
	defer w.Close()
	// The same set in another order: resolved again, no update.
	r.set("svc", "10.0.0.2", "10.0.0.1")
	require.Eventually(t, func() bool { return w.Stats().Resolutions >= 5 }, 10*time.Second, time.Millisecond)
	assert.Len(t, u.updates(), 1, "an unchanged set was passed on")
	r.set("svc", "10.0.0.2", "10.0.0.3")
	require.Eventually(t, func() bool { return len(u.updates()) == 2 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, eps("10.0.0.2:80", "10.0.0.3:80"), u.updates()[1])
}

func TestKeepsTheLastGoodSetOnErrorsAndEmptyAnswers(t *testing.T) {
	r := &fakeResolver{}
	r.set("svc", "10.0.0.1")
	var u recorder
	errs := make(chan error, 100)
	w, err := NewDNS(context.Background(), "svc", "80", &u, WithResolver(r),
		WithInterval(5*time.Millisecond), WithErrorHandler(func(err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	require.NoError(t, err)
	defer w.Close()
	errServFail := errors.New("server failure")
	r.fail(errServFail)
	assert.ErrorIs(t, <-errs, errServFail)
	r.fail(nil)
	r.set("svc")
	assert.ErrorIs(t, <-errs, ErrNoEndpoints)
	assert.Len(t, u.updates(), 1, "a failed or empty resolution replaced the set")
	st := w.Stats()
	assert.GreaterOrEqual(t, st.Errors, int64(2))
	assert.Equal(t, 1, st.Endpoints)
}

func TestResolveNowIsRateLimited(t *testing.T) {
	r := &fakeResolver{}
	r.set("svc", "10.0.0.1")
	var u recorder
	w, err := NewDNS(context.Background(), "svc", "80", &u, WithResolver(r),
		WithInterval(time.Hour), WithMinResolveInterval(time.Hour))
	require.NoError(t, err)
	for range 100 {
		w.ResolveNow()
	}
	require.NoError(t, w.Close()) // waits for the goroutine: it resolved or not by now
	assert.EqualValues(t, 1, w.Stats().Resolutions, "ResolveNow within the minimum interval resolved")
	assert.ErrorIs(t, w.Close(), ErrClosed)
}

func TestResolveNowResolvesOnceTheMinimumIntervalPassed(t *testing.T) {
	r := &fakeResolver{}
	r.set("svc", "10.0.0.1")
	var u recorder
	const minInterval = 30 * time.Millisecond
	start := time.Now()
	w, err := NewDNS(context.Background(), "svc", "80", &u, WithResolver(r),
		WithInterval(time.Hour), WithMinResolveInterval(minInterval))
	require.NoError(t, err)
	defer w.Close()
	r.set("svc", "10.0.0.9")
	for range 10 {
		w.ResolveNow()
	}
	require.Eventually(t, func() bool { return len(u.updates()) == 2 }, 10*time.Second, time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), minInterval)
	assert.EqualValues(t, 2, w.Stats().Resolutions, "requests made meanwhile count as one")
}

func TestJitterStaysWithinTenPercent(t *testing.T) {
	o := defaults()
	o.interval = 30 * time.Second
	assert.Equal(t, 27*time.Second, o.wait(0))
	assert.Equal(t, 30*time.Second, o.wait(0.5))
	assert.Less(t, o.wait(0.999999), 33*time.Second)
	assert.Greater(t, o.wait(0.999999), 32900*time.Millisecond)
}

func TestSRVUsesTheLowestPriorityGroupWithTargetsAndItsWeights(t *testing.T) {
	r := &fakeResolver{srv: []*net.SRV{
		{Target: "backup.", Port: 9000, Priority: 1, Weight: 5},
		{Target: "a.", Port: 8000, Priority: 0, Weight: 30},
		{Target: "b.", Port: 8001, Priority: 0, Weight: 10},
	}}
	r.set("a.", "10.0.0.1")
	r.set("b.", "10.0.0.2")
	r.set("backup.", "10.0.0.9")
	var u recorder
	w, err := NewSRV(context.Background(), "svc", "tcp", "example.", &u, WithResolver(r), WithInterval(time.Hour))
	require.NoError(t, err)
	defer w.Close()
	assert.Equal(t, []balancer.Endpoint{{Address: "10.0.0.1:8000", Weight: 30}, {Address: "10.0.0.2:8001", Weight: 10}}, u.updates()[0])

	// The first group has no target that resolves: the backup serves.
	got, err := srvEndpoints(context.Background(), &fakeResolver{hosts: map[string][]string{"backup.": {"10.0.0.9"}}}, r.srv)
	require.NoError(t, err)
	assert.Equal(t, []balancer.Endpoint{{Address: "10.0.0.9:9000", Weight: 5}}, got)
}

func TestSRVWeightsAreScaledAndZeroCountsAsOne(t *testing.T) {
	r := &fakeResolver{}
	for i := range 3 {
		r.set(fmt.Sprintf("t%d.", i), fmt.Sprintf("10.0.0.%d", i+1))
	}
	got, err := srvEndpoints(context.Background(), r, []*net.SRV{
		{Target: "t0.", Port: 1, Weight: 60000},
		{Target: "t1.", Port: 1, Weight: 20000},
		{Target: "t2.", Port: 1, Weight: 0},
	})
	require.NoError(t, err)
	assert.Equal(t, []balancer.Endpoint{
		{Address: "10.0.0.1:1", Weight: 100}, {Address: "10.0.0.2:1", Weight: 33}, {Address: "10.0.0.3:1", Weight: 1},
	}, got)
}

func TestCloseStopsTheWatcher(t *testing.T) {
	r := &fakeResolver{}
	r.set("svc", "10.0.0.1")
	var u recorder
	w, err := NewDNS(context.Background(), "svc", "80", &u, WithResolver(r), WithInterval(time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, w.Close()) // the goroutine has returned
	n := r.lookups.Load()
	r.set("svc", "10.0.0.2")
	assert.Equal(t, n, r.lookups.Load(), "the watcher looked up after Close")
	assert.Len(t, u.updates(), 1)
}
