package balancer_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// A round-robin balancer hands out its endpoints in turn, starting at a
// random one.
func ExampleRoundRobin() {
	rr := balancer.NewRoundRobin([]balancer.Endpoint{
		{Address: "10.0.0.1:11211"},
		{Address: "10.0.0.2:11211"},
	})
	counts := map[string]int{}
	for range 10 {
		addr, done, err := rr.Pick(context.Background())
		if err != nil {
			fmt.Println(err)
			return
		}
		counts[addr]++
		done(nil) // report the request's outcome
	}
	fmt.Println(counts["10.0.0.1:11211"], counts["10.0.0.2:11211"])
	// Output: 5 5
}

// A balancer.Pool picks a backend per request, checks out a pooled conn to
// it, and reports the outcome when the conn is closed or released.
func ExamplePool() {
	var eps []balancer.Endpoint
	for range 3 {
		srv, err := testnet.ListenEcho() // line echo servers on 127.0.0.1
		if err != nil {
			fmt.Println(err)
			return
		}
		defer srv.Close()
		eps = append(eps, balancer.Endpoint{Address: srv.Addr()})
	}

	dial := func(address string) (net.Conn, error) { return net.DialTimeout("tcp", address, time.Second) }
	pool, err := connpool.New(dial, 8, 90*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	bp := balancer.NewPool(pool, balancer.NewLeastRequest(nil))
	bp.Update(eps)

	ok := 0
	for i := range 30 {
		conn, err := bp.Get(context.Background())
		if err != nil {
			fmt.Println(err)
			return
		}
		if err := testnet.RoundTrip(conn, fmt.Sprint("request ", i)); err != nil {
			conn.(*balancer.Conn).Release() // reports a failure
			continue
		}
		conn.Close() // back to the pool; reports a success
		ok++
	}
	fmt.Println("requests answered:", ok)
	fmt.Println("backends used:", len(pool.Stats().Destinations))
	// Output:
	// requests answered: 30
	// backends used: 3
}
