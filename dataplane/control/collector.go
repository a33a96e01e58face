package control

import (
	"context"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// DataplanePrefix names, on the controller's metrics endpoint, the Go
// runtime and process metrics of the dataplane process (its go_* and
// process_* families): the memory and goroutines of the process that
// carries the traffic are what an operator sizes it by, and the
// controller's own go_* and process_* keep their names.
const DataplanePrefix = "portmux_dataplane_"

// upName is 1 when the last scrape of the dataplane over the socket
// worked.
const upName = DataplanePrefix + "up"

// Collector mirrors a dataplane's metrics into the registry it is
// registered with, fetched over the control socket at each scrape: the
// portmux_* families under their names, go_* and process_* under
// DataplanePrefix, nothing else. It is an unchecked collector (its
// families are known only once scraped); the dataplane registers no
// family under DataplanePrefix, so the two sets cannot collide.
type Collector struct {
	client  *Client
	timeout time.Duration
	log     logr.Logger
	up      *prometheus.Desc
}

// NewCollector mirrors the dataplane that client reaches. A scrape waits
// at most timeout for it.
func NewCollector(client *Client, timeout time.Duration, log logr.Logger) *Collector {
	return &Collector{
		client: client, timeout: timeout, log: log,
		up: prometheus.NewDesc(upName, "1 when the dataplane process answered this scrape on its control socket, 0 when it did not (its portmux_* metrics are then missing).", nil, nil),
	}
}

// Describe sends nothing: the collector is unchecked.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect scrapes the dataplane and sends what it mirrors.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	fams, err := c.client.Metrics(ctx)
	if err != nil {
		c.log.V(1).Info("cannot scrape the dataplane", "error", err.Error())
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		as := MirroredName(name)
		if as == "" {
			continue
		}
		mf := fams[name]
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName())
			}
			ch <- mirrored{desc: prometheus.NewDesc(as, mf.GetHelp(), labels, nil), m: withoutInfBucket(m)}
		}
	}
}

// MirroredName is the name a dataplane family has on the controller's
// endpoint, or "" when it is not mirrored.
func MirroredName(name string) string {
	switch {
	case strings.HasPrefix(name, DataplanePrefix):
		return "" // the collector's own namespace
	case strings.HasPrefix(name, "portmux_"):
		return name
	case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
		return DataplanePrefix + name
	}
	return ""
}

// withoutInfBucket drops the +Inf bucket the text format spells out and
// the parser keeps: client_golang's histograms leave it implicit (it is
// the sample count), and the encoders add it back.
func withoutInfBucket(m *dto.Metric) *dto.Metric {
	h := m.GetHistogram()
	b := h.GetBucket()
	if len(b) == 0 || !math.IsInf(b[len(b)-1].GetUpperBound(), +1) {
		return m
	}
	return &dto.Metric{Label: m.Label, TimestampMs: m.TimestampMs, Histogram: &dto.Histogram{
		SampleCount: h.SampleCount, SampleCountFloat: h.SampleCountFloat, SampleSum: h.SampleSum,
		Bucket: b[:len(b)-1], CreatedTimestamp: h.CreatedTimestamp, Exemplars: h.Exemplars,
	}}
}

// mirrored is one sample as the dataplane reported it; the registry reads
// its type from which of the value fields is set.
type mirrored struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (m mirrored) Desc() *prometheus.Desc { return m.desc }

func (m mirrored) Write(out *dto.Metric) error {
	out.Label, out.Counter, out.Gauge, out.Untyped = m.m.Label, m.m.Counter, m.m.Gauge, m.m.Untyped
	out.Histogram, out.Summary, out.TimestampMs = m.m.Histogram, m.m.Summary, m.m.TimestampMs
	return nil
}
