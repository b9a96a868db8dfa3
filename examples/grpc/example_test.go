package grpcpool_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/clientpool"
	grpcpool "github.com/seed73091bf1/connpool/examples/grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Example pools ClientConns to a health server on loopback and checks it
// through a round robin.
func Example() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	defer func() {
		srv.Stop()
		<-served
	}()

	pool, err := grpcpool.NewPool(8, time.Minute, 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	bp := clientpool.NewBalanced(pool, balancer.NewRoundRobin([]balancer.Endpoint{{Address: lis.Addr().String()}}))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if err := grpcpool.CheckAny(ctx, bp, ""); err != nil {
			fmt.Println(err)
			return
		}
	}
	st := pool.Stats()
	fmt.Printf("dials: %d, reuses: %d, idle: %d\n", st.Dials, st.Reuses, st.Idle)
	// Output:
	// dials: 1, reuses: 2, idle: 1
}
