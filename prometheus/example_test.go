package prometheus_test

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
	connpoolprom "github.com/seed73091bf1/connpool/prometheus"
)

// Serve the metrics of a pool and of its balancer on /metrics, with a pool
// label that tells this pool from others in the same registry.
func Example() {
	dial := func(address string) (net.Conn, error) {
		return net.DialTimeout("tcp", address, time.Second)
	}
	pool, err := connpool.New(dial, 16, 90*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	rr := balancer.NewRoundRobin([]balancer.Endpoint{{Address: "10.0.0.7:11211"}, {Address: "10.0.0.8:11211"}})

	reg := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"pool": "cache"}, reg).
		MustRegister(connpoolprom.NewCollector(pool, connpoolprom.WithBalancer(rr)))
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}

// Without the address label, a pool reports one series per metric, however
// many addresses it reaches.
func ExampleWithoutAddressLabel() {
	dial := func(address string) (net.Conn, error) {
		client, server := net.Pipe()
		server.Close() // this example sends nothing
		return client, nil
	}
	pool, err := connpool.New(dial, 16, 90*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	for _, address := range []string{"10.0.0.7:11211", "10.0.0.8:11211", "10.0.0.9:11211"} {
		c, err := pool.Get(address)
		if err != nil {
			log.Fatal(err)
		}
		c.Close() // back to the pool, idle
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(connpoolprom.NewCollector(pool, connpoolprom.WithoutAddressLabel()))
	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		switch f.GetName() {
		case "connpool_conns_idle":
			fmt.Println(f.GetName(), f.GetMetric()[0].GetGauge().GetValue())
		case "connpool_dials_total":
			fmt.Println(f.GetName(), f.GetMetric()[0].GetCounter().GetValue())
		}
	}
	// Output:
	// connpool_conns_idle 3
	// connpool_dials_total 3
}
