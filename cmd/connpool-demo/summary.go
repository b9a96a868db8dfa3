package main

import (
	"strconv"
	"strings"

	"github.com/seed73091bf1/connpool"
)

// printHeader names what the demo is about to do.
func printHeader(con *console, cfg config, backends []*backend) {
	con.Printf("connpool-demo: %s, policy %s, %s, %v\n",
		plural(len(backends), "backend"), cfg.policy, plural(cfg.concurrency, "client"), cfg.duration)
	for _, b := range backends {
		con.Printf("  backend %s\n", describe(b))
	}
}

// printSummary writes the final report: a table per backend with its
// latencies since the start, the pool's counters, and the errors by kind.
func printSummary(con *console, m *meter, l *load) {
	stats := m.pool.Stats()
	dests := map[string]connpool.DestinationStats{}
	for _, d := range stats.Destinations {
		dests[d.Address] = d
	}
	row := func(name string, h *Histogram, dials, dialErrors int64, ejections string) {
		con.Printf("%-22s %9d %9s %9s %7d %11d %10s\n", name, h.Count(), dur(h.Quantile(0.5)), dur(h.Quantile(0.99)),
			dials, dialErrors, ejections)
	}
	con.Printf("\n%-22s %9s %9s %9s %7s %11s %10s\n", "backend", "requests", "p50", "p99", "dials", "dial errors", "ejections")
	for _, b := range m.backends {
		d := dests[b.addr]
		row(b.addr, b.total, d.Dials, d.DialErrors, strconv.FormatInt(b.ejections.Load(), 10))
	}
	row("all backends", m.total, stats.Dials, stats.DialErrors, "-")

	con.Printf("\npool: total %d, idle %d, in use %d; dials %d, dial errors %d, reuses %d, dead at checkout %d, released %d\n",
		stats.Total, stats.Idle, stats.InUse, stats.Dials, stats.DialErrors, stats.Reuses, stats.ClosedDeadAtCheckout, stats.Released)
	con.Printf("requests: %d ok, %d failed\n", m.total.Count(), l.failed.Load())
	if kinds := l.errs.Counts(); len(kinds) > 0 {
		con.Printf("errors by kind:\n")
		for _, k := range kinds {
			con.Printf("  %9d  %s\n", k.n, strings.TrimSpace(k.kind))
		}
	}
}
