// Command report turns `go test -bench` output from the bench module into
// RESULTS.md (medians, their spread, and ratios to connpool or clientpool
// and to the floor benchmarks) and an SVG bar chart.
//
//	go run ./report -in results.txt -md RESULTS.md -svg results.svg -machine "..."
package main

import (
	"bufio"
	"cmp"
	"flag"
	"fmt"
	"html"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// row is one benchmark over all its runs.
type row struct {
	name     string // without "Benchmark" and the -GOMAXPROCS suffix
	workload string // name without its Pool= element: "HitPath/Keys=1/Serial"
	pool     string // value of the Pool= element; empty for floors

	ns, lo, hi    float64 // median, fastest and slowest time per op
	bytes, allocs float64 // medians
	runs          int
}

var line = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

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

// parse reads benchmark lines and returns one row per benchmark, in the
// order each first appears.
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
		rows = append(rows, row{
			name: name, workload: workload, pool: pool,
			ns: median(s.ns), lo: slices.Min(s.ns), hi: slices.Max(s.ns),
			bytes: median(s.bytes), allocs: median(s.allocs),
			runs: len(s.ns),
		})
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
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// find returns the row with the given name.
func find(rows []row, name string) (row, bool) {
	i := slices.IndexFunc(rows, func(r row) bool { return r.name == name })
	if i < 0 {
		return row{}, false
	}
	return rows[i], true
}

// workloads returns the workloads that compare pools, in order.
func workloads(rows []row) []string {
	var out []string
	for _, r := range rows {
		if r.pool != "" && !slices.Contains(out, r.workload) {
			out = append(out, r.workload)
		}
	}
	return out
}

// ownPools are the pools of this repository, in the order baseline looks
// for them: each workload is read against the first it has.
var ownPools = []string{"connpool", "clientpool"}

// baseline returns the row of the pool of this repository in workload w.
func baseline(rows []row, w string) (row, bool) {
	for _, pool := range ownPools {
		if r, ok := findIn(rows, w, pool); ok {
			return r, true
		}
	}
	return row{}, false
}

// floorOf returns the name of the floor benchmark that a HitPath or
// AcquireRelease workload is read against: one address against a locked
// stack with one allocation, N addresses against N locked stacks in a map,
// in the same mode.
func floorOf(workload string) (string, bool) {
	parts := strings.Split(workload, "/")
	if len(parts) == 2 && parts[0] == "AcquireRelease" {
		return "Floor/Floor=MutexPopPushAlloc32/" + parts[1], true
	}
	if len(parts) != 3 || parts[0] != "HitPath" {
		return "", false
	}
	keys, mode := parts[1], parts[2]
	if keys == "Keys=1" {
		return "Floor/Floor=MutexPopPushAlloc32/" + mode, true
	}
	return "Floor/Floor=MapMutexPopPush/" + keys + "/" + mode, true
}

// oneAddress returns the name of connpool's one-address run in the mode of
// a HitPath workload at more addresses.
func oneAddress(workload string) (string, bool) {
	parts := strings.Split(workload, "/")
	if len(parts) != 3 || parts[0] != "HitPath" || parts[1] == "Keys=1" {
		return "", false
	}
	return "HitPath/Pool=connpool/Keys=1/" + parts[2], true
}

// ns formats a time per op with three or so significant digits.
func ns(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 1000:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func spread(r row) string { return ns(r.lo) + "–" + ns(r.hi) }

func ratio(v, base float64) string {
	if base <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v/base)
}

func markdown(rows []row, machine string) string {
	var b strings.Builder
	b.WriteString("# Benchmark results\n\n")
	fmt.Fprintf(&b, "Each benchmark ran once per pass of `run.sh` (%s), the pools in a different order each pass. "+
		"ns/op is the median over the passes and min–max their range. "+
		"Ratio to connpool (to clientpool where connpool has no row) is time per op over that pool's in the same workload; "+
		"ratio to floor is over the floor benchmark named in the table, in the same mode (see Floors); "+
		"ratio to 1 address is connpool's time over its own at one address, in the same mode. "+
		"Lower is faster.\n\n", runs(rows))
	if machine != "" {
		fmt.Fprintf(&b, "Machine: %s\n\n", machine)
	}
	for _, w := range workloads(rows) {
		table(&b, rows, w)
	}
	floors(&b, rows)
	return b.String()
}

// runs describes how many runs the rows have.
func runs(rows []row) string {
	if len(rows) == 0 {
		return "no runs"
	}
	lo, hi := rows[0].runs, rows[0].runs
	for _, r := range rows {
		lo, hi = min(lo, r.runs), max(hi, r.runs)
	}
	if lo == hi {
		return fmt.Sprintf("%d passes", lo)
	}
	return fmt.Sprintf("%d to %d passes", lo, hi)
}

// table writes the table of one workload. HitPath and AcquireRelease
// tables get a ratio to their floor and a row for the floor itself; tables
// at many addresses a ratio to one address; a table with a none-reuse row
// the memory each row uses beyond that row's.
func table(b *strings.Builder, rows []row, w string) {
	own, _ := baseline(rows, w)
	base := own.ns
	floorName, hasFloor := floorOf(w)
	floor, _ := find(rows, floorName)
	oneName, hasOne := oneAddress(w)
	one, _ := find(rows, oneName)
	reuse, hasReuse := findIn(rows, w, "none-reuse")

	head := []string{"Pool", "ns/op", "min–max", "ratio to " + cmp.Or(own.pool, "connpool")}
	if hasFloor {
		head = append(head, "ratio to floor")
	}
	if hasOne {
		head = append(head, "ratio to 1 address")
	}
	head = append(head, "B/op", "allocs/op")
	if hasReuse {
		head = append(head, "B/op beyond none-reuse", "allocs/op beyond none-reuse")
	}
	fmt.Fprintf(b, "## %s\n\n", w)
	if hasFloor {
		fmt.Fprintf(b, "Floor: %s.\n\n", floorLabel(floorName))
	}
	fmt.Fprintf(b, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))

	cells := func(label string, r row, isOwn bool) []string {
		c := []string{label, ns(r.ns), spread(r), ratio(r.ns, base)}
		if hasFloor {
			c = append(c, ratio(r.ns, floor.ns))
		}
		if hasOne {
			if isOwn {
				c = append(c, ratio(r.ns, one.ns))
			} else {
				c = append(c, "-")
			}
		}
		c = append(c, fmt.Sprintf("%.0f", r.bytes), fmt.Sprintf("%.0f", r.allocs))
		if hasReuse {
			c = append(c, fmt.Sprintf("%.0f", r.bytes-reuse.bytes), fmt.Sprintf("%.0f", r.allocs-reuse.allocs))
		}
		return c
	}
	for _, r := range rows {
		if r.workload == w && r.pool != "" {
			fmt.Fprintf(b, "| %s |\n", strings.Join(cells(r.pool, r, r.pool == own.pool), " | "))
		}
	}
	if hasFloor && floor.runs > 0 {
		fmt.Fprintf(b, "| %s |\n", strings.Join(cells("*floor*", floor, false), " | "))
	}
	b.WriteString("\n")
}

// findIn returns the row of pool in workload w.
func findIn(rows []row, w, pool string) (row, bool) {
	i := slices.IndexFunc(rows, func(r row) bool { return r.workload == w && r.pool == pool })
	if i < 0 {
		return row{}, false
	}
	return rows[i], true
}

// floorLabel turns "Floor/Floor=MapMutexPopPush/Keys=1000/Serial" into
// "MapMutexPopPush/Keys=1000".
func floorLabel(name string) string {
	s := strings.TrimPrefix(name, "Floor/Floor=")
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[:i]
	}
	return s
}

// floors writes one table of the floor benchmarks, serial and parallel
// side by side.
func floors(b *strings.Builder, rows []row) {
	var labels []string
	for _, r := range rows {
		if strings.HasPrefix(r.name, "Floor/") && !slices.Contains(labels, floorLabel(r.name)) {
			labels = append(labels, floorLabel(r.name))
		}
	}
	if len(labels) == 0 {
		return
	}
	b.WriteString("## Floors\n\nThe least work a hit path can do on this machine; BenchmarkFloor in floors_test.go describes each.\n\n")
	b.WriteString("| Floor | Serial ns/op | min–max | Parallel ns/op | min–max | B/op | allocs/op |\n|---|---|---|---|---|---|---|\n")
	for _, l := range labels {
		s, okS := find(rows, "Floor/Floor="+l+"/Serial")
		p, okP := find(rows, "Floor/Floor="+l+"/Parallel")
		cell := func(r row, ok bool) string {
			if !ok {
				return "- | -"
			}
			return ns(r.ns) + " | " + spread(r)
		}
		mem := s
		if !okS {
			mem = p
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.0f | %.0f |\n", l, cell(s, okS), cell(p, okP), mem.bytes, mem.allocs)
	}
	b.WriteString("\n")
}

// chart draws one group of horizontal bars per workload, scaled per group,
// with a line over each bar from the fastest run to the slowest. HitPath
// and AcquireRelease groups end with a bar for their floor.
func chart(rows []row) string {
	const width, barH, gap, left = 760, 16, 4, 200
	var body strings.Builder
	y := 30
	for _, w := range workloads(rows) {
		fmt.Fprintf(&body, `<text x="4" y="%d" font-weight="bold">%s</text>`+"\n", y, html.EscapeString(w))
		y += 8
		type bar struct {
			label, color string
			r            row
		}
		var bars []bar
		own, _ := baseline(rows, w)
		for _, r := range rows {
			if r.workload != w || r.pool == "" {
				continue
			}
			color := "#9aa5b1"
			if r.pool == own.pool {
				color = "#2b6cb0"
			}
			bars = append(bars, bar{r.pool, color, r})
		}
		if name, ok := floorOf(w); ok {
			if r, ok := find(rows, name); ok {
				bars = append(bars, bar{"floor: " + floorLabel(name), "#d6bcfa", r})
			}
		}
		most := 0.0
		for _, br := range bars {
			most = max(most, br.r.hi)
		}
		scale := func(v float64) int { return int(float64(width-left-90) * v / most) }
		for _, br := range bars {
			bw := max(scale(br.r.ns), 1)
			fmt.Fprintf(&body, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, y+barH-4, html.EscapeString(br.label))
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y, bw, barH, br.color)
			fmt.Fprintf(&body, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left+scale(br.r.lo), y+barH/2, left+scale(br.r.hi), y+barH/2)
			fmt.Fprintf(&body, `<text x="%d" y="%d">%s ns</text>`+"\n", left+max(bw, scale(br.r.hi))+4, y+barH-4, ns(br.r.ns))
			y += barH + gap
		}
		y += 18
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, y)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	b.WriteString(`<text x="4" y="16">median time per op, lower is better; lines span the fastest to the slowest run (bars scaled per workload)</text>` + "\n")
	b.WriteString(body.String())
	b.WriteString("</svg>\n")
	return b.String()
}
