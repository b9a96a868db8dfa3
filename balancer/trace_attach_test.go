package balancer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/balancer"
)

// A balancer serves the trace of the last Pool made with it: a later Pool
// made without a trace detaches the earlier Pool's.
func TestLastPoolWithoutTraceDetachesEarlierTrace(t *testing.T) {
	p := fakeBackends(t)
	var ejected atomic.Int32
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "a"}, {Address: "dead"}},
		balancer.WithEjection(1, time.Hour, time.Hour))
	_ = balancer.NewPool(p, rr, balancer.WithTrace(&balancer.Trace{
		Ejected: func(balancer.EjectionInfo) { ejected.Add(1) },
	}))
	bp2 := balancer.NewPool(p, rr) // the last Pool made with rr: no trace
	for range 2 {
		if c, err := bp2.Get(context.Background()); err == nil {
			c.Close()
		}
	}
	require.True(t, state(rr.States(), "dead").Ejected)
	assert.Zero(t, ejected.Load(), "the trace of a Pool that is not the last one made with the balancer got an ejection")
}
