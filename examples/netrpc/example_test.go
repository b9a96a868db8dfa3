package netrpc_test

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"time"

	"github.com/seed73091bf1/connpool/examples/netrpc"
)

// ExampleCluster calls three servers through a Cluster, and goes on after
// one of them dies.
func ExampleCluster() {
	var servers []*netrpc.Server
	defer func() {
		for _, s := range servers {
			_ = s.Kill() // ErrServerKilled for the one killed below
		}
	}()
	var addrs []string
	for range 3 {
		s, err := netrpc.NewServer()
		if err != nil {
			fmt.Println(err)
			return
		}
		servers = append(servers, s)
		addrs = append(addrs, s.Addr())
	}

	cl, err := netrpc.NewCluster(addrs)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cl.Close() // before the servers are killed

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sum, err := cl.Add(ctx, 2, 3)
	fmt.Println(sum, err)

	_ = servers[0].Kill() // one server dies: its calls move to the others
	total := 0
	for i := range 10 {
		sum, err := cl.Add(ctx, i, 1)
		if err != nil {
			fmt.Println(err)
			return
		}
		total += sum
	}
	fmt.Println(total)

	_, err = cl.Div(ctx, 1, 0)
	var serverErr rpc.ServerError
	fmt.Println(errors.As(err, &serverErr), serverErr)
	// Output:
	// 5 <nil>
	// 55
	// true divide by zero
}
