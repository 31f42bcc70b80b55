package printerd

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// This file is /metrics in Prometheus text format: requests by route and status, denied
// requests, policy refusals by rule, printers' states, and whatever Config.Metrics adds
// (revocation_apply_seconds from the daemon).

type metrics struct {
	mu struct {
		sync.Mutex
		requests map[[2]string]uint64 // route pattern, status
		refusals map[string]uint64    // rule
		denied   uint64
		refused  uint64 // connections over a cap
	}
}

func newMetrics() *metrics {
	m := &metrics{}
	m.mu.requests = map[[2]string]uint64{}
	m.mu.refusals = map[string]uint64{}
	return m
}

func (m *metrics) request(route string, code int) {
	m.mu.Lock()
	m.mu.requests[[2]string{route, fmt.Sprint(code)}]++
	m.mu.Unlock()
}

func (m *metrics) refusal(rule string) {
	m.mu.Lock()
	m.mu.refusals[rule]++
	m.mu.Unlock()
}

func (m *metrics) refusedConn() {
	m.mu.Lock()
	m.mu.refused++
	m.mu.Unlock()
}

func (m *metrics) denied() {
	m.mu.Lock()
	m.mu.denied++
	m.mu.Unlock()
}

// promLabel escapes a label value.
func promLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func (s *Server) writeMetrics(w io.Writer) {
	m := s.metrics
	m.mu.Lock()
	keys := make([][2]string, 0, len(m.mu.requests))
	for k := range m.mu.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	fmt.Fprintln(w, "# HELP printgate_http_requests_total HTTP requests by route and status.")
	fmt.Fprintln(w, "# TYPE printgate_http_requests_total counter")
	for _, k := range keys {
		fmt.Fprintf(w, "printgate_http_requests_total{route=\"%s\",code=\"%s\"} %d\n", promLabel(k[0]), k[1], m.mu.requests[k])
	}
	fmt.Fprintln(w, "# HELP printgate_http_denied_total Requests refused for identity, role, key or origin.")
	fmt.Fprintln(w, "# TYPE printgate_http_denied_total counter")
	fmt.Fprintf(w, "printgate_http_denied_total %d\n", m.mu.denied)
	fmt.Fprintln(w, "# HELP printgate_http_connections_refused_total Connections refused over a per-device or total cap.")
	fmt.Fprintln(w, "# TYPE printgate_http_connections_refused_total counter")
	fmt.Fprintf(w, "printgate_http_connections_refused_total %d\n", m.mu.refused)
	_, conns := s.limits.conns.open("")
	_, uploads := s.limits.uploads.open("")
	fmt.Fprintln(w, "# HELP printgate_http_connections_open Open HTTP connections.")
	fmt.Fprintln(w, "# TYPE printgate_http_connections_open gauge")
	fmt.Fprintf(w, "printgate_http_connections_open %d\n", conns)
	fmt.Fprintln(w, "# HELP printgate_uploads_in_progress Uploads being received.")
	fmt.Fprintln(w, "# TYPE printgate_uploads_in_progress gauge")
	fmt.Fprintf(w, "printgate_uploads_in_progress %d\n", uploads)
	fmt.Fprintln(w, "# HELP printgate_policy_refusals_total G-code lines refused by the safety policy at the API, by rule.")
	fmt.Fprintln(w, "# TYPE printgate_policy_refusals_total counter")
	for _, r := range sortedKeys(m.mu.refusals) {
		fmt.Fprintf(w, "printgate_policy_refusals_total{rule=\"%s\"} %d\n", promLabel(r), m.mu.refusals[r])
	}
	m.mu.Unlock()
	fmt.Fprintln(w, "# HELP printgate_printer_state 1 for the printer's current state.")
	fmt.Fprintln(w, "# TYPE printgate_printer_state gauge")
	for _, n := range s.names {
		st := s.printers[n].Printer.Status()
		fmt.Fprintf(w, "printgate_printer_state{printer=\"%s\",state=\"%s\"} 1\n", promLabel(n), promLabel(string(st.State)))
	}
	fmt.Fprintln(w, "# HELP printgate_printer_temperature_celsius Last reported temperatures.")
	fmt.Fprintln(w, "# TYPE printgate_printer_temperature_celsius gauge")
	for _, n := range s.names {
		st := s.printers[n].Printer.Status()
		for i, t := range st.Temps.Tools {
			fmt.Fprintf(w, "printgate_printer_temperature_celsius{printer=\"%s\",heater=\"tool%d\",kind=\"actual\"} %g\n", promLabel(n), i, t.Actual)
			fmt.Fprintf(w, "printgate_printer_temperature_celsius{printer=\"%s\",heater=\"tool%d\",kind=\"target\"} %g\n", promLabel(n), i, t.Target)
		}
		if b := st.Temps.Bed; b != nil {
			fmt.Fprintf(w, "printgate_printer_temperature_celsius{printer=\"%s\",heater=\"bed\",kind=\"actual\"} %g\n", promLabel(n), b.Actual)
			fmt.Fprintf(w, "printgate_printer_temperature_celsius{printer=\"%s\",heater=\"bed\",kind=\"target\"} %g\n", promLabel(n), b.Target)
		}
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics(w)
	}
}

func (s native) nMetrics(q *request) error {
	q.w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	q.w.Header().Set("Cache-Control", "no-store")
	q.w.WriteHeader(http.StatusOK)
	s.writeMetrics(q.w)
	return nil
}
