package netrpc

import (
	"context"
	"time"

	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/clientpool"
)

const (
	// idlePerServer is how many idle clients the pool keeps per server.
	idlePerServer = 8
	// idleTimeout is how long an idle client stays in the pool.
	idleTimeout = time.Minute
)

// Cluster sends calls of the Arith service to a set of servers: a
// clientpool.Pool of [Client] values per server address, and a round robin
// in front of it. It is safe for concurrent use.
type Cluster struct {
	pool *clientpool.Pool[*Client]
	bp   *clientpool.Balanced[*Client]
}

// NewCluster returns a Cluster over the servers at addrs (host:port each).
// It dials nothing yet: each server is dialed when a call first picks it.
// opts go to clientpool.New, after the Cluster's own settings (8 idle
// clients per server, closed after a minute idle).
//
// The round robin ejects a server after 3 calls in a row failed on it, for
// 5 seconds at first and longer if it keeps failing, up to a minute. A dead
// server then costs a few failed dials each time its ejection ends, rather
// than one on every third call; Do moves each of those calls to another
// server, within the pool's retry budget (see clientpool.WithRetryBudget).
func NewCluster(addrs []string, opts ...clientpool.Option) (*Cluster, error) {
	pool, err := clientpool.New(Dial, idlePerServer, idleTimeout, opts...)
	if err != nil {
		return nil, err
	}
	rr := balancer.NewRoundRobin(endpoints(addrs), balancer.WithEjection(3, 5*time.Second, time.Minute))
	return &Cluster{pool: pool, bp: clientpool.NewBalanced(pool, rr)}, nil
}

// endpoints returns the balancer endpoints of addrs.
func endpoints(addrs []string) []balancer.Endpoint {
	eps := make([]balancer.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = balancer.Endpoint{Address: a}
	}
	return eps
}

// Add returns a+b, computed by one of the servers.
func (c *Cluster) Add(ctx context.Context, a, b int) (int, error) {
	return c.call(ctx, "Arith.Add", Args{A: a, B: b})
}

// Div returns a/b, computed by one of the servers. For b == 0 the server
// answers with an error, an rpc.ServerError that the returned error wraps;
// the client that carried the call stays in the pool.
func (c *Cluster) Div(ctx context.Context, a, b int) (int, error) {
	return c.call(ctx, "Arith.Div", Args{A: a, B: b})
}

// call sends method with args through Balanced.Do and returns the reply.
//
// Both methods of Arith compute a result from their arguments and change
// nothing, so calling one twice does no harm: the call is marked
// clientpool.Idempotent, and Do may send it again after a connection
// error, on a fresh client to the same server or on another server. A
// call that is not idempotent must not be marked so: the pool cannot tell
// whether the server ran it before the connection broke.
//
// The error is a *clientpool.DoError, which names the address of the last
// attempt and wraps its error.
func (c *Cluster) call(ctx context.Context, method string, args Args) (int, error) {
	var result int
	err := c.bp.Do(ctx, func(cl *Client) error {
		// A reply of its own per attempt: after ctx ends, net/rpc may
		// still write into it (see Client.Call).
		var reply int
		if err := cl.Call(ctx, method, args, &reply); err != nil {
			return err
		}
		result = reply
		return nil
	}, clientpool.Idempotent())
	return result, err
}

// SetServers replaces the servers. The pooled clients of the servers that
// left are closed, at once if idle and otherwise when their calls end.
func (c *Cluster) SetServers(addrs []string) { c.bp.Update(endpoints(addrs)) }

// Stats returns the pool's counts, per server address and in total.
func (c *Cluster) Stats() clientpool.Stats { return c.pool.Stats() }

// Close closes the pool: idle clients now, leased ones when their calls
// end. Later calls fail with clientpool.ErrClosed, as does a second Close.
func (c *Cluster) Close() error { return c.pool.Close() }
