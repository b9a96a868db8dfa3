package clientpool_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/clientpool"
)

// In shared mode each lease is checked out, traced and watched for leaks
// on its own.
func TestSharedLeasesAreTracedAndWatchedForLeaks(t *testing.T) {
	var mu sync.Mutex
	var events []string
	add := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	leaks := make(chan clientpool.LeakReport, 4)
	var d dialer
	p := newPool(t, &d, clientpool.WithShared(2),
		clientpool.WithTrace(&clientpool.Trace{
			DialStart:  func(a string) { add("dial " + a) },
			GotConn:    func(i clientpool.GotConnInfo) { add("got " + i.Address) },
			ConnClosed: func(a string, r clientpool.CloseReason) { add("closed " + a + " " + r.String()) },
		}),
		clientpool.WithLeakDetection(20*time.Millisecond, func(r clientpool.LeakReport) { leaks <- r }))
	ctx := context.Background()

	held, err := p.Get(ctx, "a") // forgotten
	require.NoError(t, err)
	l, err := p.Get(ctx, "a") // a second share of the same value
	require.NoError(t, err)
	require.Same(t, held.Value(), l.Value())
	require.NoError(t, l.Close())

	var r clientpool.LeakReport
	select {
	case r = <-leaks:
	case <-time.After(10 * time.Second):
		t.Fatal("no leak report")
	}
	assert.Equal(t, "a", r.Address)
	assert.True(t, strings.HasPrefix(r.Stack, "github.com/seed73091bf1/connpool/clientpool_test.TestSharedLeasesAreTracedAndWatchedForLeaks"), r.Stack)
	require.NoError(t, held.Release())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"dial a", "got a", "got a", "closed a released"}, events)
	assert.Empty(t, leaks, "the returned lease is not reported")
}
