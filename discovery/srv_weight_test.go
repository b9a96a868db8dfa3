package discovery

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// RFC 2782: "In the presence of records containing weights greater than 0,
// records with weight 0 should have a very small chance of being
// selected."
func TestSRVZeroWeightGetsLessThanAPositiveWeight(t *testing.T) {
	r := &fakeResolver{}
	r.set("t0.", "10.0.0.1")
	r.set("t1.", "10.0.0.2")
	got, err := srvEndpoints(context.Background(), r, []*net.SRV{
		{Target: "t0.", Port: 1, Weight: 1},
		{Target: "t1.", Port: 1, Weight: 0},
	})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Less(t, got[1].Weight, got[0].Weight,
		"the weight-0 target %s gets as much traffic as the weight-1 target %s: %+v", got[1].Address, got[0].Address, got)
}

func TestSRVAllZeroWeightsShareEvenly(t *testing.T) {
	r := &fakeResolver{}
	r.set("t0.", "10.0.0.1")
	r.set("t1.", "10.0.0.2")
	got, err := srvEndpoints(context.Background(), r, []*net.SRV{{Target: "t0.", Port: 1}, {Target: "t1.", Port: 1}})
	require.NoError(t, err)
	require.Equal(t, 1, got[0].Weight)
	require.Equal(t, 1, got[1].Weight)
}
