package main

import (
	"bytes"
	"flag"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// demoConfig parses args as the command line would, failing the test if
// they are rejected.
func demoConfig(t testing.TB, args ...string) config {
	t.Helper()
	var out bytes.Buffer
	cfg, err := parseArgs(args, &out)
	require.NoError(t, err, out.String())
	return cfg
}

// TestDemoRunsWithoutFailedRequests runs the whole script, backend stop and
// restart included, in a short form.
func TestDemoRunsWithoutFailedRequests(t *testing.T) {
	for _, policy := range []string{"peak-ewma", "round-robin", "maglev"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			cfg := demoConfig(t, "-c", "4", "-d", "1200ms", "-i", "200ms", "-policy", policy)
			var out, errOut bytes.Buffer
			code := run(cfg, false, &out, &errOut)
			assert.Equal(t, 0, code, "the demo reported failed requests:\n%s%s", &out, &errOut)
			assert.Contains(t, out.String(), "connpool-demo: 5 backends, policy "+policy+", 4 clients, 1.2s")
			assert.Regexp(t, `stopping backend 127\.0\.0\.1:\d+`, out.String())
			assert.Regexp(t, `restarted backend 127\.0\.0\.1:\d+`, out.String())
			assert.Contains(t, out.String(), "requests: ")
			assert.Empty(t, errOut.String())
		})
	}
}

// TestDemoEventsHappenOnTheirOwnTimers checks that a run shorter than the
// status interval still stops and restarts its backend, in order, and ends
// on time rather than at the next status report.
func TestDemoEventsHappenOnTheirOwnTimers(t *testing.T) {
	cfg := demoConfig(t, "-c", "2", "-d", "300ms", "-i", "1h")
	var out bytes.Buffer
	start := time.Now()
	run(cfg, false, &out, &out)
	assert.Less(t, time.Since(start), 5*time.Second, "the run should end at its duration plus shutdown")
	text := out.String()
	stopping, restarted := strings.Index(text, "stopping backend"), strings.Index(text, "restarted backend")
	require.GreaterOrEqual(t, stopping, 0, text)
	assert.Greater(t, restarted, stopping, text)
	assert.Equal(t, 1, strings.Count(text, "req/s"), "a single status line, for the whole run:\n%s", text)
}

// TestDemoAggregatesErrorsWhenEveryBackendIsDown points the demo at
// addresses where nothing listens: its output must stay a few lines, the
// first error of each kind and the counts, not a line per failed request.
func TestDemoAggregatesErrorsWhenEveryBackendIsDown(t *testing.T) {
	cfg := demoConfig(t, "-c", "8", "-d", "500ms", "-i", "100ms", "-backends", closedAddr(t)+","+closedAddr(t))
	var out, errOut bytes.Buffer
	code := run(cfg, false, &out, &errOut)
	assert.Equal(t, 1, code)
	text := out.String()
	lines := strings.Count(text, "\n")
	assert.Less(t, lines, 60, "output should be aggregated:\n%s", text)
	assert.Equal(t, 1, strings.Count(text, "request failed: "), "only the first error of its kind is printed:\n%s", text)
	assert.Contains(t, text, "errors by kind:")
	assert.Contains(t, text, "connection refused")
	assert.Regexp(t, `dial errors [1-9]\d*`, text, "failed dials are reported per interval")
	assert.Empty(t, errOut.String())
}

// closedAddr returns a loopback address where nothing listens: one the
// kernel just gave a listener that is closed again.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestDemoRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // in the output
	}{
		{"unknown policy", []string{"-policy", "fastest"}, []string{
			`unknown -policy "fastest"`,
			"valid policies: least-request, maglev, peak-ewma, random, round-robin, weighted",
		}},
		{"no clients", []string{"-c", "0"}, []string{"-c 0"}},
		{"zero duration", []string{"-d", "0s"}, []string{"-d 0s"}},
		{"zero interval", []string{"-i", "0s"}, []string{"-i 0s"}},
		{"empty backend list", []string{"-backends", " , "}, []string{"names no address"}},
		{"stray argument", []string{"now"}, []string{`unexpected argument "now"`}},
		{"unknown flag", []string{"-x"}, []string{"flag provided but not defined: -x", "Usage: connpool-demo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := parseArgs(tt.args, &out)
			require.ErrorIs(t, err, errBadFlags)
			for _, w := range tt.want {
				assert.Contains(t, out.String(), w)
			}
		})
	}
}

func TestDemoHelpIsNotAnError(t *testing.T) {
	var out bytes.Buffer
	_, err := parseArgs([]string{"-h"}, &out)
	assert.ErrorIs(t, err, flag.ErrHelp)
	assert.Contains(t, out.String(), "-plain")
}

func TestDemoDropsDuplicateBackends(t *testing.T) {
	cfg := demoConfig(t, "-backends", "b:7, a:7,b:7,,a:7 ,c:7")
	assert.Equal(t, []string{"b:7", "a:7", "c:7"}, cfg.backends)
}

// TestDemoHeaderSaysOneBackend runs against one real backend and checks the
// header's grammar and that the backend has one row in the table.
func TestDemoHeaderSaysOneBackend(t *testing.T) {
	backends, err := startBackends(nil)
	require.NoError(t, err)
	t.Cleanup(func() { closeBackends(backends) })
	addr := backends[0].addr
	cfg := demoConfig(t, "-c", "1", "-d", "100ms", "-backends", addr+","+addr)
	var out bytes.Buffer
	assert.Equal(t, 0, run(cfg, false, &out, &out), out.String())
	assert.Contains(t, out.String(), "connpool-demo: 1 backend, policy peak-ewma, 1 client, 100ms\n")
	assert.Equal(t, 2, strings.Count(out.String(), addr), "one header line and one table row:\n%s", &out)
}

// TestDemoLiveTableRedrawsInPlace runs the demo as on a terminal: the
// status is a table that each report erases and redraws, with events above
// it, and no table is left before the final report.
func TestDemoLiveTableRedrawsInPlace(t *testing.T) {
	cfg := demoConfig(t, "-c", "2", "-d", "600ms", "-i", "100ms")
	var out bytes.Buffer
	assert.Equal(t, 0, run(cfg, true, &out, &out), out.String())
	text := out.String()
	assert.Contains(t, text, "in flight")
	assert.Contains(t, text, clearToEnd, "the table is erased before it is redrawn")
	assert.NotContains(t, text, " req/s  p50", "no plain status lines")
	final := text[strings.LastIndex(text, clearToEnd):]
	assert.Contains(t, final, "dial errors", "the final report follows the last erase")
	assert.NotContains(t, final, "in flight", "the live table is gone at the end")
}

func TestPlural(t *testing.T) {
	assert.Equal(t, "1 backend", plural(1, "backend"))
	assert.Equal(t, "0 backends", plural(0, "backend"))
	assert.Equal(t, "5 backends", plural(5, "backend"))
}

func TestDurFormatsThreeSignificantDigits(t *testing.T) {
	assert.Equal(t, "-", dur(0))
	assert.Equal(t, "999ns", dur(999))
	assert.Equal(t, "1.23ms", dur(1234567))
	assert.Equal(t, "21.3ms", dur(21345678))
	assert.Equal(t, "45.3µs", dur(45321))
	assert.Equal(t, "1m2s", dur(61999*time.Millisecond))
}
