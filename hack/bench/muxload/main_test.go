package main

import "testing"

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
	for _, s := range []string{"idle-", "idle-0", "idle-x", "conn-http"} {
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
