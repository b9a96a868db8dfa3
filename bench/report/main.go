// Command report turns `go test -bench` output from the bench module into
// RESULTS.md (medians and ratios to connpool) and an SVG bar chart.
//
//	go run ./report -in results.txt -md RESULTS.md -svg results.svg -machine "..."
package main

import (
	"bufio"
	"flag"
	"fmt"
	"html"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// row is the medians of one benchmark.
type row struct {
	workload, pool    string
	ns, bytes, allocs float64
}

var line = regexp.MustCompile(`^Benchmark(\S+?)-\d+\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

func main() {
	in := flag.String("in", "results.txt", "benchmark output")
	md := flag.String("md", "RESULTS.md", "markdown report to write")
	svg := flag.String("svg", "results.svg", "SVG chart to write")
	machine := flag.String("machine", "", "description of the machine")
	flag.Parse()

	rows, err := parse(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*md, []byte(markdown(rows, *machine)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*svg, []byte(chart(rows)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// parse reads benchmark lines and returns the median of each benchmark.
func parse(path string) ([]row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type samples struct{ ns, bytes, allocs []float64 }
	all := map[string]*samples{}
	var order []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		s := all[m[1]]
		if s == nil {
			s = &samples{}
			all[m[1]] = s
			order = append(order, m[1])
		}
		s.ns = append(s.ns, num(m[2]))
		s.bytes = append(s.bytes, num(m[3]))
		s.allocs = append(s.allocs, num(m[4]))
	}
	var rows []row
	for _, name := range order {
		s := all[name]
		workload, pool := split(name)
		rows = append(rows, row{workload, pool, median(s.ns), median(s.bytes), median(s.allocs)})
	}
	return rows, sc.Err()
}

// split turns "HitPath/Pool=fatih/Keys=1/Serial" into the workload
// "HitPath/Keys=1/Serial" and the pool "fatih".
func split(name string) (workload, pool string) {
	var parts []string
	for _, p := range strings.Split(name, "/") {
		if v, ok := strings.CutPrefix(p, "Pool="); ok {
			pool = v
			continue
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/"), pool
}

func num(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func workloads(rows []row) []string {
	var out []string
	for _, r := range rows {
		if !slices.Contains(out, r.workload) {
			out = append(out, r.workload)
		}
	}
	return out
}

func markdown(rows []row, machine string) string {
	var b strings.Builder
	b.WriteString("# Benchmark results\n\nMedians of `go test -bench` runs made by `run.sh`; ratio is time per op over connpool's in the same workload (lower is faster).\n\n")
	if machine != "" {
		fmt.Fprintf(&b, "Machine: %s\n\n", machine)
	}
	for _, w := range workloads(rows) {
		fmt.Fprintf(&b, "## %s\n\n| Pool | ns/op | ratio to connpool | B/op | allocs/op |\n|---|---|---|---|---|\n", w)
		base := 0.0
		for _, r := range rows {
			if r.workload == w && r.pool == "connpool" {
				base = r.ns
			}
		}
		for _, r := range rows {
			if r.workload != w {
				continue
			}
			ratio := "-"
			if base > 0 {
				ratio = fmt.Sprintf("%.2f", r.ns/base)
			}
			fmt.Fprintf(&b, "| %s | %.1f | %s | %.0f | %.0f |\n", r.pool, r.ns, ratio, r.bytes, r.allocs)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// chart draws one group of horizontal bars per workload, scaled per group.
func chart(rows []row) string {
	const width, barH, gap, left = 760, 16, 4, 170
	var b strings.Builder
	y := 30
	var body strings.Builder
	for _, w := range workloads(rows) {
		fmt.Fprintf(&body, `<text x="4" y="%d" font-weight="bold">%s</text>`+"\n", y, html.EscapeString(w))
		y += 8
		most := 0.0
		for _, r := range rows {
			if r.workload == w {
				most = max(most, r.ns)
			}
		}
		for _, r := range rows {
			if r.workload != w {
				continue
			}
			bw := int(float64(width-left-90) * r.ns / most)
			color := "#9aa5b1"
			if r.pool == "connpool" {
				color = "#2b6cb0"
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, y+barH-4, html.EscapeString(r.pool))
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y, max(bw, 1), barH, color)
			fmt.Fprintf(&body, `<text x="%d" y="%d">%.0f ns</text>`+"\n", left+bw+4, y+barH-4, r.ns)
			y += barH + gap
		}
		y += 18
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, y)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	b.WriteString(`<text x="4" y="16">time per op, lower is better (bars scaled per workload)</text>` + "\n")
	b.WriteString(body.String())
	b.WriteString("</svg>\n")
	return b.String()
}
