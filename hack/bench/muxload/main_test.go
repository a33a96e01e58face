//go:build linux

package main

import (
	"testing"
	"time"
)

func TestParseScenario(t *testing.T) {
	sc, err := parseScenario("idle-9000", 32)
	if err != nil || sc.kind != kindIdle || sc.idle != 9000 || sc.route != routeSSH {
		t.Errorf("idle-9000 = %+v, %v", sc, err)
	}
	if sc, _ := parseScenario("lat-tls", 32); sc.workers != 1 || sc.route != routeTLSA {
		t.Errorf("lat-tls = %+v", sc)
	}
	if sc, _ := parseScenario("conn-ssh", 32); sc.workers != 32 {
		t.Errorf("conn-ssh = %+v", sc)
	}
	if sc, err := parseScenario("reload-10000", 32); err != nil || sc.kind != kindReload || sc.idle != 10000 || sc.workers != 32 || sc.route != routeSSH {
		t.Errorf("reload-10000 = %+v, %v", sc, err)
	}
	for _, s := range []string{"idle-", "idle-0", "idle-x", "conn-http", "reload-", "reload--1"} {
		if _, err := parseScenario(s, 1); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseRunFlags(t *testing.T) {
	if _, _, err := parseRunFlags([]string{"-peer", "x", "-addr", "192.168.1.1:17443"}); err == nil {
		t.Error("a non-loopback mux address accepted")
	}
	if _, _, err := parseRunFlags([]string{"-peer", "x", "-routes", "tls-a"}); err == nil {
		t.Error("routes without ssh accepted")
	}
	if _, _, err := parseRunFlags([]string{"-peer", "x", "-direct", "-cmd", "true"}); err == nil {
		t.Error("-direct with a mux command accepted")
	}
	opt, _, err := parseRunFlags([]string{"-peer", "x", "-scenarios", "conn-ssh,,tput", "-routes", "ssh"})
	if err != nil || len(opt.scenarios) != 2 || len(opt.routes) != 1 {
		t.Errorf("opt = %+v, %v", opt, err)
	}
}

func TestParseReloadFlags(t *testing.T) {
	base := []string{"-peer", "x", "-scenarios", "reload-100", "-cmd", "exec mux"}
	for _, c := range []struct {
		extra   []string
		wantErr bool
	}{
		{[]string{"-reload-cmd", "true", "-reload-log", "reloaded"}, false},
		{[]string{"-reload-log", "reloaded"}, true},                                        // nothing changes the mux
		{[]string{"-reload-cmd", "true"}, true},                                            // nothing shows it applied
		{[]string{"-reload-cmd", "true", "-reload-log", "("}, true},                        // not a regular expression
		{[]string{"-reload-cmd", "true", "-reload-log", "x", "-reload-every", "0s"}, true}, // no period
	} {
		opt, _, err := parseRunFlags(append(append([]string{}, base...), c.extra...))
		if (err != nil) != c.wantErr {
			t.Errorf("%v: %v", c.extra, err)
		}
		if err == nil && (opt.reloadLog == nil || opt.reloadEvery != time.Second || opt.reloadRate != 1000) {
			t.Errorf("%v: %+v", c.extra, opt)
		}
	}
	if _, _, err := parseRunFlags([]string{"-peer", "x", "-direct", "-scenarios", "reload-1", "-reload-cmd", "true", "-reload-log", "x"}); err == nil {
		t.Error("reload-N with no mux accepted")
	}
}
