package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/seed73091bf1/connpool/balancer"
)

// newBalancerFunc makes a balancer of one policy.
type newBalancerFunc func([]balancer.Endpoint, ...balancer.Option) balancer.Balancer

// policies are the balancer policies the demo can run.
var policies = map[string]newBalancerFunc{
	"round-robin": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewRoundRobin(e, o...)
	},
	"weighted": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewWeightedRoundRobin(e, o...)
	},
	"random": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewRandom(e, o...)
	},
	"least-request": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewLeastRequest(e, o...)
	},
	"peak-ewma": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewPeakEWMA(e, o...)
	},
	"maglev": func(e []balancer.Endpoint, o ...balancer.Option) balancer.Balancer {
		return balancer.NewMaglev(e, o...)
	},
}

// config is what the command line asks for.
type config struct {
	concurrency int
	duration    time.Duration
	interval    time.Duration // between status reports
	policy      string
	newBalancer newBalancerFunc
	backends    []string // real backends to drive; none means the built-in ones
	plain       bool     // one status line per interval even on a terminal
}

// errBadFlags is returned by parseArgs for a command line it rejected,
// after it wrote why.
var errBadFlags = errors.New("bad flags")

// parseArgs parses the command line (without the program name). For a bad
// one it writes what is wrong to output and returns an error: flag.ErrHelp
// for -h, errBadFlags otherwise.
func parseArgs(args []string, output io.Writer) (config, error) {
	names := slices.Sorted(maps.Keys(policies))
	var cfg config
	var backendList string
	fs := flag.NewFlagSet("connpool-demo", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.IntVar(&cfg.concurrency, "c", 16, "number of concurrent clients")
	fs.DurationVar(&cfg.duration, "d", 10*time.Second, "how long to drive load")
	fs.DurationVar(&cfg.interval, "i", time.Second, "how often to report status")
	fs.StringVar(&cfg.policy, "policy", "peak-ewma", "balancer policy: "+strings.Join(names, ", "))
	fs.StringVar(&backendList, "backends", "", "comma-separated host:port of real line-echo servers to drive instead of the built-in ones (no backend is stopped)")
	fs.BoolVar(&cfg.plain, "plain", false, "print a status line per interval even on a terminal, instead of a live table")
	fs.Usage = func() {
		_, _ = fmt.Fprintf(output, "Usage: connpool-demo [flags]\n\n"+
			"Drives load through connpool and its balancer against five built-in\n"+
			"loopback backends (one slow), stopping one midway, and reports.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, errBadFlags // flag wrote the error and the usage
	}
	if err := cfg.complete(names, backendList, fs.Args()); err != nil {
		_, _ = fmt.Fprintf(output, "connpool-demo: %v\nRun 'connpool-demo -h' for usage.\n", err)
		return config{}, errBadFlags
	}
	return cfg, nil
}

// complete checks the parsed flags and fills in what derives from them.
func (cfg *config) complete(policyNames []string, backendList string, extra []string) error {
	var ok bool
	switch {
	case len(extra) > 0:
		return fmt.Errorf("unexpected argument %q: the demo takes flags only", extra[0])
	case cfg.concurrency < 1:
		return fmt.Errorf("-c %d: need at least 1 client", cfg.concurrency)
	case cfg.duration <= 0:
		return fmt.Errorf("-d %v: the duration must be positive", cfg.duration)
	case cfg.interval <= 0:
		return fmt.Errorf("-i %v: the interval must be positive", cfg.interval)
	}
	if cfg.newBalancer, ok = policies[cfg.policy]; !ok {
		return fmt.Errorf("unknown -policy %q; valid policies: %s", cfg.policy, strings.Join(policyNames, ", "))
	}
	if backendList != "" {
		if cfg.backends = parseBackends(backendList); len(cfg.backends) == 0 {
			return fmt.Errorf("-backends %q names no address", backendList)
		}
	}
	return nil
}

// parseBackends splits a comma-separated list of addresses, dropping empty
// entries and repeats, in order of first appearance.
func parseBackends(list string) []string {
	var out []string
	for _, addr := range strings.Split(list, ",") {
		if addr = strings.TrimSpace(addr); addr != "" && !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}

// plural returns "1 backend", "2 backends".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
