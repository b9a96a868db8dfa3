package balancer_test

import (
	"context"
	"fmt"

	"github.com/seed73091bf1/connpool/balancer"
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
