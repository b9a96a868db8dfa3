package balancer_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool/balancer"
)

// policies makes each balancer of the package over eps.
var policies = []struct {
	name string
	make func([]balancer.Endpoint) balancer.Balancer
}{
	{"RoundRobin", func(eps []balancer.Endpoint) balancer.Balancer { return balancer.NewRoundRobin(eps) }},
	{"WeightedRoundRobin", func(eps []balancer.Endpoint) balancer.Balancer { return balancer.NewWeightedRoundRobin(eps) }},
	{"Random", func(eps []balancer.Endpoint) balancer.Balancer { return balancer.NewRandom(eps) }},
	{"LeastRequest", func(eps []balancer.Endpoint) balancer.Balancer { return balancer.NewLeastRequest(eps) }},
	{"PeakEWMA", func(eps []balancer.Endpoint) balancer.Balancer { return balancer.NewPeakEWMA(eps) }},
	{"Maglev", func(eps []balancer.Endpoint) balancer.Balancer { return balancer.NewMaglev(eps) }},
}

// BenchmarkUpdate measures replacing 1,000 endpoints with 1,000 others, with
// uniform weights and with weights up to 65,535 (the SRV range).
func BenchmarkUpdate(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	sets := func(weight func() int) [2][]balancer.Endpoint {
		var s [2][]balancer.Endpoint
		for k := range s {
			s[k] = make([]balancer.Endpoint, 1000)
			for i := range s[k] {
				s[k][i] = balancer.Endpoint{Address: fmt.Sprint("10.", k, ".", i/256, ".", i%256, ":80"), Weight: weight()}
			}
		}
		return s
	}
	for _, weights := range []struct {
		name string
		sets [2][]balancer.Endpoint
	}{
		{"Uniform", sets(func() int { return 1 })},
		{"Weights=1-65535", sets(func() int { return 1 + rng.IntN(65535) })},
	} {
		for _, policy := range policies {
			b.Run(fmt.Sprintf("%s/Endpoints=1000/%s", policy.name, weights.name), func(b *testing.B) {
				b.ReportAllocs()
				bal := policy.make(nil)
				i := 0
				for b.Loop() {
					bal.Update(weights.sets[i%2])
					i++
				}
			})
		}
	}
}

// BenchmarkTailLatency sends requests from 16 clients through each policy to
// five simulated backends, one answering in 20 ms and four in 1 ms, and
// reports the median and 99th percentile latency and the slow backend's
// share of requests. Latency is simulated by sleeping: it is the workload.
func BenchmarkTailLatency(b *testing.B) {
	const clients, requests = 16, 100
	eps := endpoints(5)
	slow := eps[4].Address
	for _, policy := range policies {
		if policy.name == "Maglev" {
			continue // keyless requests go to a random endpoint
		}
		b.Run(policy.name, func(b *testing.B) {
			var p50, p99, share []float64
			for b.Loop() {
				latencies, slowN, err := sendLoad(policy.make(eps), slow, clients, requests, 20*time.Millisecond)
				if err != nil {
					b.Fatal(err)
				}
				p50 = append(p50, float64(latencies[len(latencies)/2])/1e6)
				p99 = append(p99, float64(latencies[len(latencies)*99/100])/1e6)
				share = append(share, 100*float64(slowN)/float64(len(latencies)))
			}
			b.ReportMetric(median(p50), "p50-ms")
			b.ReportMetric(median(p99), "p99-ms")
			b.ReportMetric(median(share), "slow-%")
		})
	}
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}
