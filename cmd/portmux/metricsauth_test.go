package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The decision about a token is reused for a while, so a scraper costs the
// API server two reviews per TTL, not per scrape; failures of the API
// server are not remembered. (The reviews themselves are checked against
// a real API server in TestSecureMetricsAskTheAPIServer.)
func TestMetricsAuthRemembersDecisions(t *testing.T) {
	cs := fake.NewClientset()
	reviews := map[string]int{}
	failing := false
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews["token"]++
		if failing {
			return true, nil, errors.New("API server unavailable")
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		tr.Status.Authenticated = tr.Spec.Token != "bad"
		tr.Status.User.Username = "system:serviceaccount:monitoring:" + tr.Spec.Token
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews["access"]++
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		sar.Status.Allowed = sar.Spec.User == "system:serviceaccount:monitoring:prometheus" && sar.Spec.NonResourceAttributes.Path == "/metrics"
		return true, sar, nil
	})
	a := &metricsAuthorizer{authn: cs.AuthenticationV1(), authz: cs.AuthorizationV1(), cache: map[[32]byte]metricsDecision{}}
	check := func(token, path string) int {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			r.Header.Set("Authorization", "bearer "+token) // the scheme's case does not matter
		}
		code, _ := a.check(r, logr.Discard())
		return code
	}
	for _, c := range []struct {
		token, path    string
		want           int
		tokens, access int // reviews made so far
	}{
		{"", "/metrics", http.StatusUnauthorized, 0, 0},
		{"prometheus", "/metrics", http.StatusOK, 1, 1},
		{"prometheus", "/metrics", http.StatusOK, 1, 1}, // remembered
		{"prometheus", "/debug", http.StatusForbidden, 2, 2},
		{"nosy", "/metrics", http.StatusForbidden, 3, 3},
		{"nosy", "/metrics", http.StatusForbidden, 3, 3}, // remembered
		{"bad", "/metrics", http.StatusUnauthorized, 4, 3},
	} {
		if got := check(c.token, c.path); got != c.want || reviews["token"] != c.tokens || reviews["access"] != c.access {
			t.Fatalf("%q %s: %d after %d token and %d access reviews; want %d after %d and %d",
				c.token, c.path, got, reviews["token"], reviews["access"], c.want, c.tokens, c.access)
		}
	}
	failing = true
	for range 2 {
		if got := check("grafana", "/metrics"); got != http.StatusInternalServerError {
			t.Fatalf("API server down: %d, want 500", got)
		}
	}
	if reviews["token"] != 6 {
		t.Errorf("a failed review was remembered: %d token reviews, want 6", reviews["token"])
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer abc":     "abc",
		"bearer abc":     "abc",
		"BEARER  abc ":   "abc",
		"Basic dXNlcjpw": "",
		"Bearer":         "",
		"Bearer ":        "",
		"":               "",
		"abc":            "",
	} {
		if got := bearerToken(h); got != want {
			t.Errorf("bearerToken(%q) = %q, want %q", h, got, want)
		}
	}
}
