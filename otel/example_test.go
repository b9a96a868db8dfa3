package otel_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/seed73091bf1/connpool"
	connpoolotel "github.com/seed73091bf1/connpool/otel"
)

// Report the conns of a pool, by address and state, and read them back
// with a manual reader, as an exporter would.
func Example() {
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
	idle, err := pool.Get("10.0.0.7:11211")
	if err != nil {
		log.Fatal(err)
	}
	idle.Close() // back to the pool, idle
	used, err := pool.Get("10.0.0.8:11211")
	if err != nil {
		log.Fatal(err)
	}
	defer used.Close()

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	reg, err := connpoolotel.Register(mp, pool, connpoolotel.WithPoolName("cache"))
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Unregister()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		log.Fatal(err)
	}
	var lines []string
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name != "db.client.connection.count" {
			continue
		}
		for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
			lines = append(lines, fmt.Sprintf("%s %d", dp.Attributes.Encoded(attribute.DefaultEncoder()), dp.Value))
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// db.client.connection.pool.name=cache,db.client.connection.state=idle,server.address=10.0.0.7,server.port=11211 1
	// db.client.connection.pool.name=cache,db.client.connection.state=idle,server.address=10.0.0.8,server.port=11211 0
	// db.client.connection.pool.name=cache,db.client.connection.state=used,server.address=10.0.0.7,server.port=11211 0
	// db.client.connection.pool.name=cache,db.client.connection.state=used,server.address=10.0.0.8,server.port=11211 1
}
