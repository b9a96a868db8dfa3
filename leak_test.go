package connpool_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// leakReports returns a report function that sends to the channel it
// also returns, and fails the test if the channel is full.
func leakReports(t *testing.T) (func(connpool.LeakReport), chan connpool.LeakReport) {
	ch := make(chan connpool.LeakReport, 16)
	return func(r connpool.LeakReport) {
		select {
		case ch <- r:
		default:
			t.Error("too many leak reports")
		}
	}, ch
}

// nextReport waits for the next leak report.
func nextReport(t *testing.T, ch chan connpool.LeakReport) connpool.LeakReport {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no leak report")
		return connpool.LeakReport{}
	}
}

// forget checks out a conn to address and never returns it.
func forget(t *testing.T, p *connpool.Pool, address string) {
	t.Helper()
	_, err := p.Get(address)
	require.NoError(t, err)
}

func TestLeakDetectionReportsAForgottenConnOnceWithItsStack(t *testing.T) {
	report, reports := leakReports(t)
	d := &testnet.FakeDialer{}
	const threshold = 20 * time.Millisecond
	p := newPool(t, d.Dial, 4, time.Minute, connpool.WithLeakDetection(threshold, report))

	start := time.Now()
	forget(t, p, "a")
	r := nextReport(t, reports)
	assert.Equal(t, "a", r.Address)
	assert.GreaterOrEqual(t, r.Held, threshold)
	assert.GreaterOrEqual(t, time.Since(start), threshold, "not reported early")
	first, _, _ := strings.Cut(r.Stack, "\n")
	assert.Equal(t, "github.com/seed73091bf1/connpool_test.forget", first, "the stack starts at the caller of Get:\n%s", r.Stack)
	assert.Contains(t, r.Stack, "TestLeakDetectionReportsAForgottenConnOnceWithItsStack")
	assert.Contains(t, r.Stack, "leak_test.go:")

	// A second forgotten conn is reported by a later scan; by then the
	// first would have been reported again if it were to be.
	forget(t, p, "b")
	assert.Equal(t, "b", nextReport(t, reports).Address)
	assert.Empty(t, reports)
}

func TestLeakDetectionNeverReportsConnsReturnedInTime(t *testing.T) {
	report, reports := leakReports(t)
	d := &testnet.FakeDialer{}
	p := newPool(t, d.Dial, 4, time.Minute, connpool.WithLeakDetection(30*time.Millisecond, report))

	for range 50 {
		c, err := p.Get("returned")
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	c, err := p.New("released")
	require.NoError(t, err)
	require.NoError(t, c.(*connpool.Conn).Release())
	err = p.Do(t.Context(), "done", func(*connpool.Conn) error { return nil })
	require.NoError(t, err)

	// The forgotten conn, taken last, is reported after the others would
	// have been: it is the only report.
	forget(t, p, "forgotten")
	assert.Equal(t, "forgotten", nextReport(t, reports).Address)
	forget(t, p, "forgotten-too")
	assert.Equal(t, "forgotten-too", nextReport(t, reports).Address)
	assert.Empty(t, reports)
}

func TestLeakDetectionRejectsBadArguments(t *testing.T) {
	d := &testnet.FakeDialer{}
	_, err := connpool.New(d.Dial, 1, 0, connpool.WithLeakDetection(-time.Second, func(connpool.LeakReport) {}))
	assert.ErrorIs(t, err, connpool.ErrInvalidConfig)
	_, err = connpool.New(d.Dial, 1, 0, connpool.WithLeakDetection(time.Second, nil))
	assert.ErrorIs(t, err, connpool.ErrInvalidConfig)
	p, err := connpool.New(d.Dial, 1, 0, connpool.WithLeakDetection(0, nil))
	require.NoError(t, err, "0 is off")
	require.NoError(t, p.Close())
}
