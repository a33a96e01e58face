//go:build linux

package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// good says whether a run counts towards the headline: it completed and
// its routing checked out. The others are counted, never averaged in.
func good(r result) bool { return r.Err == "" && r.RouteOK }

// row is one line of the headline table: a figure of one scenario.
type row struct {
	label    string
	scenario string
	cell     func(runs []result) string // medians over the good runs
}

// headlineRows are the figures the README's table shows, in its order.
// Rows whose scenario did not run are left out; idle-N and tput rows take
// their N and stream count from the results.
func headlineRows(rs []result) []row {
	workers := func(scen string) string {
		for _, r := range rs {
			if r.Scenario == scen && r.Workers > 0 {
				return fmt.Sprintf(" (%d workers)", r.Workers)
			}
		}
		return ""
	}
	rows := []row{
		{"SSH-routed conn/s" + workers("conn-ssh"), "conn-ssh", medianOf(always(func(r result) float64 { return r.ConnPerS }), fmtRate)},
		{"CPU per SSH connection", "conn-ssh", medianOf(muxCPU(func(r result) float64 { return r.CPUusConn }), fmtMicros)},
		{"1-conn SSH p50 / p99", "lat-ssh", latencyCell},
		{"TLS-SNI-routed conn/s" + workers("conn-tls"), "conn-tls", medianOf(always(func(r result) float64 { return r.ConnPerS }), fmtRate)},
		{"CPU per TLS connection", "conn-tls", medianOf(muxCPU(func(r result) float64 { return r.CPUusConn }), fmtMicros)},
		{"1-conn TLS p50 / p99", "lat-tls", latencyCell},
	}
	streams := 0
	for _, r := range rs {
		if r.Scenario == "tput" && r.Streams > 0 {
			streams = r.Streams
			break
		}
	}
	rows = append(rows,
		row{throughputLabel(streams), "tput", medianOf(always(func(r result) float64 { return r.MBps }), fmtMBps)},
		row{"CPU per GB forwarded", "tput", medianOf(muxCPU(func(r result) float64 { return r.CPUsPerG }), fmtSecondsPerGB)},
	)
	for _, scen := range scenarioOrder(rs) {
		if n, ok := strings.CutPrefix(scen, "idle-"); ok {
			rows = append(rows, row{"memory per idle connection @" + n + " (PSS)", scen,
				medianOf(always(func(r result) float64 { return r.PSSKBConn }), fmtKB)})
		}
	}
	rows = append(rows, reloadRows(rs)...)
	return append(rows, udpRows(rs)...)
}

// reloadRows are the figures of each reload-N scenario: swaps applied, new
// connections failed and held connections alive (over every run: they
// must be all, none and all), the latency of new connections around swaps
// and between them, and the mux's CPU per swap with no load.
func reloadRows(rs []result) []row {
	var rows []row
	for _, scen := range scenarioOrder(rs) {
		n, ok := strings.CutPrefix(scen, "reload-")
		if !ok {
			continue
		}
		what := "reload, " + n + " held: "
		rows = append(rows,
			row{what + "swaps applied", scen, sumCell(func(r result) (int64, int64) { return int64(r.ReloadsApplied), int64(r.Reloads) }, fmtCount)},
			row{what + "new connections failed", scen, sumCell(func(r result) (int64, int64) { return r.Failed, r.Conns + r.Failed }, fmtOf)},
			row{what + "held connections alive at the end", scen, sumCell(func(r result) (int64, int64) { return int64(r.HeldAlive), int64(r.Idle) }, fmtCount)},
			row{what + "new-conn p50 / p99 around swaps", scen, pairCell(func(r result) (float64, float64) { return r.AroundP50ms, r.AroundP99ms })},
			row{what + "new-conn p50 / p99 between swaps", scen, pairCell(func(r result) (float64, float64) { return r.BetweenP50ms, r.BetweenP99ms })},
			// The figures under load stay in the JSON: on a shared box the
			// load's own CPU moves by more than a swap costs.
			row{what + "mux CPU per swap, no load", scen, medianOf(muxCPU(func(r result) float64 { return r.CPUmsReloadQuiet }), fmtMillis)},
		)
	}
	return rows
}

// sumCell sums a count and its total over every run, failed ones too: a
// reload must lose nothing in any run.
func sumCell(value func(result) (n, total int64), format func(n, total int64) string) func([]result) string {
	return func(runs []result) string {
		var n, total int64
		for _, r := range runs {
			a, b := value(r)
			n, total = n+a, total+b
		}
		return format(n, total)
	}
}

// fmtCount is "n/total".
func fmtCount(n, total int64) string { return fmt.Sprintf("%d/%d", n, total) }

// fmtOf is "n of total", the total as a rate.
func fmtOf(n, total int64) string { return fmt.Sprintf("%d of %s", n, fmtRate(float64(total))) }

// pairCell is "a / b ms", the medians over the good runs.
func pairCell(value func(result) (a, b float64)) func([]result) string {
	return func(runs []result) string {
		var as, bs []float64
		for _, r := range runs {
			if good(r) {
				a, b := value(r)
				as, bs = append(as, a), append(bs, b)
			}
		}
		return cell(func(float64) string {
			return fmtMs(median(as)) + " / " + fmtMs(median(bs)) + " ms"
		}, as, len(runs)-len(as))
	}
}

// udpRows are the UDP figures, in the order the scenarios ran: for each
// rate scenario datagrams/s, MB/s and CPU per million datagrams, then
// session set-up and memory per idle session.
func udpRows(rs []result) []row {
	var rows []row
	for _, scen := range scenarioOrder(rs) {
		var first result
		for _, r := range rs {
			if r.Scenario == scen {
				first = r
				break
			}
		}
		switch {
		case strings.HasPrefix(scen, "udp-rate-") || strings.HasPrefix(scen, "udp-small-"):
			what := fmt.Sprintf("%s, %d B", sessionsLabel(first.Sessions), first.DgramSize)
			rows = append(rows,
				row{"UDP datagrams/s each way, " + what, scen, medianOf(always(func(r result) float64 { return r.DgramPerS }), fmtRate)},
				row{"UDP MB/s each way, " + what, scen, medianOf(always(func(r result) float64 { return r.MBps }), fmtMBps)},
				row{"CPU per million datagrams, " + what, scen, medianOf(muxCPU(func(r result) float64 { return r.CPUsPerMDgram }), fmtSecondsPerGB)},
			)
		case scen == "udp-setup":
			rows = append(rows,
				row{fmt.Sprintf("UDP sessions set up/s (%d workers)", first.Workers), scen, medianOf(always(func(r result) float64 { return r.SessionsPerS }), fmtRate)},
				row{"CPU per UDP session set up", scen, medianOf(muxCPU(func(r result) float64 { return r.CPUusSession }), fmtMicros)},
			)
		case strings.HasPrefix(scen, "udp-idle-"):
			rows = append(rows, row{"memory per idle UDP session @" + strings.TrimPrefix(scen, "udp-idle-") + " (PSS)", scen,
				medianOf(always(func(r result) float64 { return r.PSSKBConn }), fmtKB)})
		}
	}
	return rows
}

// sessionsLabel is "1 session" or "N sessions".
func sessionsLabel(n int) string {
	if n == 1 {
		return "1 session"
	}
	return fmt.Sprintf("%d sessions", n)
}

// always is a figure every run has.
func always(f func(result) float64) func(result) (float64, bool) {
	return func(r result) (float64, bool) { return f(r), true }
}

// muxCPU is a figure of the mux's CPU, which runs without a mux (direct)
// do not have.
func muxCPU(f func(result) float64) func(result) (float64, bool) {
	return func(r result) (float64, bool) { return f(r), r.CPUSource != "none" && r.CPUSource != "" }
}

// throughputLabel names the throughput row after its stream count.
func throughputLabel(streams int) string {
	if streams == 1 {
		return "throughput, 1 stream"
	}
	return fmt.Sprintf("throughput, %d streams", streams)
}

// medianOf makes a cell: the median of value over the good runs that have
// it, and a count of the runs left out for failing.
func medianOf(value func(result) (float64, bool), format func(float64) string) func([]result) string {
	return func(runs []result) string {
		var xs []float64
		failed := 0
		for _, r := range runs {
			if !good(r) {
				failed++
			} else if x, ok := value(r); ok {
				xs = append(xs, x)
			}
		}
		return cell(format, xs, failed)
	}
}

// latencyCell is "p50 / p99 ms", the medians over the good runs.
func latencyCell(runs []result) string {
	var p50, p99 []float64
	for _, r := range runs {
		if good(r) {
			p50, p99 = append(p50, r.P50ms), append(p99, r.P99ms)
		}
	}
	if len(p50) == 0 {
		return cell(nil, nil, len(runs))
	}
	return cell(func(float64) string {
		return fmtMs(median(p50)) + " / " + fmtMs(median(p99)) + " ms"
	}, p50, len(runs)-len(p50))
}

// cell formats the median of xs, notes failed runs, and is "—" when there
// is nothing to show.
func cell(format func(float64) string, xs []float64, failed int) string {
	s := "—"
	if len(xs) > 0 {
		s = format(median(xs))
	}
	if failed > 0 {
		s += fmt.Sprintf(" (%d failed)", failed)
	}
	return s
}

// renderTables is the markdown for a set of results: the headline (one
// column per peer, medians over repeats) and the detail (one row per peer
// and scenario, with ranges, latency, CPU, failures, routing and load).
func renderTables(rs []result) string {
	var b strings.Builder
	peers := peerOrder(rs)
	b.WriteString("| |")
	for _, p := range peers {
		b.WriteString(" " + p + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(peers)) + "\n")
	for _, rw := range headlineRows(rs) {
		if !slices.ContainsFunc(rs, func(r result) bool { return r.Scenario == rw.scenario }) {
			continue
		}
		b.WriteString("| " + rw.label + " |")
		for _, p := range peers {
			b.WriteString(" " + rw.cell(runsOf(rs, p, rw.scenario)) + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("| route checks passed |")
	for _, p := range peers {
		runs := runsOf(rs, p, "")
		n := 0
		for _, r := range runs {
			if r.RouteOK {
				n++
			}
		}
		fmt.Fprintf(&b, " %d/%d |", n, len(runs))
	}
	b.WriteString("\n\n")
	b.WriteString(renderDetail(rs, peers))
	b.WriteString(renderPaired(rs))
	return b.String()
}

// renderDetail is one row per peer and scenario.
func renderDetail(rs []result, peers []string) string {
	var b strings.Builder
	b.WriteString("| peer | scenario | runs | median [min–max] | p50 / p90 / p99 ms | mux CPU | failed | routes ok | mux alive | disturbed (max other load) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range peers {
		for _, scen := range scenarioOrder(rs) {
			runs := runsOf(rs, p, scen)
			if len(runs) == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
				p, scen, len(runs), spread(runs), latencies3(runs), cpuCell(runs),
				failures(runs), countIf(runs, func(r result) bool { return r.RouteOK }),
				countIf(runs, func(r result) bool { return r.MuxAlive }), disturbance(runs))
		}
	}
	return b.String()
}

// headline is a run's main figure, how to print its number and its unit.
func headline(r result) (x float64, number func(float64) string, unit string) {
	switch {
	case r.Reloads > 0:
		return r.AroundP99ms - r.BetweenP99ms, fmtMs, "ms p99 added around swaps"
	case r.Idle > 0:
		return r.PSSKBConn, fmtKBNumber, "KB"
	case r.Streams > 0:
		return r.MBps, fmtWhole, "MB/s"
	case r.DgramPerS > 0:
		return r.DgramPerS, fmtRate, "datagrams/s"
	case r.SessionsPerS > 0:
		return r.SessionsPerS, fmtRate, "sessions/s"
	default:
		return r.ConnPerS, fmtRate, "conn/s"
	}
}

// spread is "median [min–max] unit" of the good runs' main figure.
func spread(runs []result) string {
	var xs []float64
	var number func(float64) string
	var unit string
	for _, r := range runs {
		if good(r) {
			var x float64
			x, number, unit = headline(r)
			xs = append(xs, x)
		}
	}
	if len(xs) == 0 {
		return "—"
	}
	s := number(median(xs))
	if len(xs) > 1 {
		s += " [" + number(slices.Min(xs)) + "–" + number(slices.Max(xs)) + "]"
	}
	return s + " " + unit
}

// latencies3 is the median p50, p90 and p99 of connection runs.
func latencies3(runs []result) string {
	var a, b, c []float64
	for _, r := range runs {
		if good(r) && (r.ConnPerS > 0 || r.SessionsPerS > 0) {
			a, b, c = append(a, r.P50ms), append(b, r.P90ms), append(c, r.P99ms)
		}
	}
	if len(a) == 0 {
		return "—"
	}
	return fmtMs(median(a)) + " / " + fmtMs(median(b)) + " / " + fmtMs(median(c))
}

// cpuCell is the mux's median CPU per unit of work and where it was read.
func cpuCell(runs []result) string {
	var xs []float64
	var unit func(float64) string
	source := ""
	for _, r := range runs {
		x, u, ok := cpuOf(r)
		if !ok {
			continue
		}
		source = r.CPUSource
		xs, unit = append(xs, x), u
	}
	if len(xs) == 0 {
		return "—"
	}
	return unit(median(xs)) + " (" + source + ")"
}

// cpuOf is a good run's CPU per unit of its work and how to print it;
// false when the run has none.
func cpuOf(r result) (x float64, unit func(float64) string, ok bool) {
	if !good(r) || r.CPUSource == "none" || r.CPUSource == "" {
		return 0, nil, false
	}
	switch {
	case r.Reloads > 0:
		return r.CPUmsReloadQuiet, func(v float64) string { return fmtMillis(v) + "/swap, no load" }, true
	case r.Streams > 0:
		return r.CPUsPerG, func(v float64) string { return fmtSecondsPerGB(v) + "/GB" }, true
	case r.ConnPerS > 0:
		return r.CPUusConn, func(v float64) string { return fmtMicros(v) + "/conn" }, true
	case r.DgramPerS > 0:
		return r.CPUsPerMDgram, func(v float64) string { return fmtSecondsPerGB(v) + "/M datagrams" }, true
	case r.SessionsPerS > 0:
		return r.CPUusSession, func(v float64) string { return fmtMicros(v) + "/session" }, true
	}
	return 0, nil, false
}

// renderPaired compares portmux with portmux-before (BASELINE) repeat
// by repeat: a repeat runs the two a minute apart, so its ratio cancels
// most of what the box's other load did to both, which the medians of
// each peer keep. Empty unless both peers ran.
func renderPaired(rs []result) string {
	const after, before = "portmux", "portmux-before"
	var b strings.Builder
	for _, scen := range scenarioOrder(rs) {
		var main, cpu, p99 []float64
		unit := ""
		for _, x := range runsOf(rs, after, scen) {
			for _, y := range runsOf(rs, before, scen) {
				if x.Rep != y.Rep || !good(x) || !good(y) {
					continue
				}
				hx, _, u := headline(x)
				hy, _, _ := headline(y)
				main, unit = appendRatio(main, hx, hy), u
				cx, _, okx := cpuOf(x)
				cy, _, oky := cpuOf(y)
				if okx && oky {
					cpu = appendRatio(cpu, cx, cy)
				}
				if x.ConnPerS > 0 || x.SessionsPerS > 0 {
					p99 = appendRatio(p99, x.P99ms, y.P99ms)
				}
			}
		}
		if len(main) == 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("\n" + after + " over " + before + ": the median of the repeats' ratios [min–max]\n\n")
			b.WriteString("| scenario | main figure | CPU per unit | p99 | repeats |\n|---|---|---|---|---|\n")
		}
		fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %d |\n", scen, ratioCell(main), unit, ratioCell(cpu), ratioCell(p99), len(main))
	}
	return b.String()
}

// appendRatio appends a/b when both are positive (a reload's added p99
// may not be).
func appendRatio(xs []float64, a, b float64) []float64 {
	if a <= 0 || b <= 0 {
		return xs
	}
	return append(xs, a/b)
}

// ratioCell is "median [min–max]" of ratios.
func ratioCell(xs []float64) string {
	if len(xs) == 0 {
		return "—"
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	return strconv.FormatFloat(median(xs), 'f', 3, 64) + " [" + f(slices.Min(xs)) + "–" + f(slices.Max(xs)) + "]"
}

// failures sums failed connections over all runs and counts runs that
// could not complete.
func failures(runs []result) string {
	var failed, total int64
	errs := 0
	for _, r := range runs {
		failed += r.Failed
		total += r.Conns + r.Failed
		if r.Err != "" {
			errs++
		}
	}
	s := "0"
	if total > 0 {
		s = strconv.FormatFloat(100*float64(failed)/float64(total), 'f', 1, 64) + " %"
	}
	// Datagrams are not connections: their share lost, the worst run's.
	lost, rate := 0.0, false
	for _, r := range runs {
		if r.DgramPerS > 0 {
			lost, rate = max(lost, r.LossPct), true
		}
	}
	if rate {
		s = strconv.FormatFloat(lost, 'f', 1, 64) + " % lost"
	}
	if errs > 0 {
		s += fmt.Sprintf(", %d run(s) with errors", errs)
	}
	return s
}

// countIf is "k/n": how many runs satisfy ok.
func countIf(runs []result, ok func(result) bool) string {
	k := 0
	for _, r := range runs {
		if ok(r) {
			k++
		}
	}
	return fmt.Sprintf("%d/%d", k, len(runs))
}

// disturbance counts disturbed runs and gives the most other load seen.
func disturbance(runs []result) string {
	n, worst := 0, 0.0
	for _, r := range runs {
		if r.Disturbed {
			n++
		}
		worst = max(worst, r.PreLoad, r.Other)
	}
	return fmt.Sprintf("%d (%.2f cores)", n, worst)
}

// peerOrder lists the peers in the order they first appear.
func peerOrder(rs []result) []string { return firstSeen(rs, func(r result) string { return r.Peer }) }

// scenarioOrder lists the scenarios in the order they first appear.
func scenarioOrder(rs []result) []string {
	return firstSeen(rs, func(r result) string { return r.Scenario })
}

// firstSeen lists the values of key in rs in the order they first appear.
func firstSeen(rs []result, key func(result) string) []string {
	var out []string
	for _, r := range rs {
		if k := key(r); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// runsOf is the runs of one peer, of one scenario or ("") of all.
func runsOf(rs []result, peer, scen string) []result {
	var out []result
	for _, r := range rs {
		if r.Peer == peer && (scen == "" || r.Scenario == scen) {
			out = append(out, r)
		}
	}
	return out
}

// fmtRate prints a rate as 7.3k above a thousand.
func fmtRate(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// fmtWhole prints a number with no decimals.
func fmtWhole(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }

// fmtMicros prints microseconds.
func fmtMicros(v float64) string { return fmtWhole(v) + " µs" }

// fmtMillis prints milliseconds (of CPU, said by the row).
func fmtMillis(v float64) string { return fmtMs(v) + " ms" }

// fmtMBps prints MB/s.
func fmtMBps(v float64) string { return fmtWhole(v) + " MB/s" }

// fmtSecondsPerGB prints CPU seconds (per GB, said by the row).
func fmtSecondsPerGB(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " s" }

// fmtKBNumber prints kilobytes with one decimal below 10, none above.
func fmtKBNumber(v float64) string {
	if math.Abs(v) < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return fmtWhole(v)
}

// fmtKB prints kilobytes.
func fmtKB(v float64) string { return fmtKBNumber(v) + " KB" }

// fmtMs prints milliseconds with two decimals below 10, one above.
func fmtMs(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
