// Package promvec builds the dataplane's labelled Prometheus collectors in
// one line each (name, help, labels), so the metric tables of the dataplane
// and its UDP relay read as lists of metrics rather than of option structs.
// The collectors are unregistered: callers register them on the registry
// they choose, never on a global one.
package promvec

import "github.com/prometheus/client_golang/prometheus"

// Counter returns an unregistered counter vector named name with help and
// the given label names.
func Counter(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// Gauge returns an unregistered gauge vector named name with help and the
// given label names.
func Gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}
