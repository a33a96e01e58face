package route_test

import (
	"fmt"

	"github.com/portmux/portmux/dataplane/route"
	"github.com/portmux/portmux/dataplane/snapshot"
)

// The routes of an sslh-style listener, tried in order, decide from the
// bytes a client has sent so far; a decision can wait for more bytes.
func ExampleDecide() {
	routes := []snapshot.Route{
		{Name: "ssh", Match: snapshot.Match{Protocol: snapshot.SSH}},
		{Name: "web", Match: snapshot.Match{Protocol: snapshot.HTTP, Host: []string{"www.example.com"}}},
		{Name: "rest", Match: snapshot.Match{Protocol: snapshot.Any}},
	}
	show := func(data string, done bool) {
		d := route.Decide(routes, []byte(data), done)
		switch {
		case d.NeedMore:
			fmt.Printf("%q: need more bytes\n", data)
		case d.Route < 0:
			fmt.Printf("%q: no route\n", data)
		default:
			fmt.Printf("%q: %s\n", data, routes[d.Route].Name)
		}
	}
	show("SSH-2.0-OpenSSH_9.6\r\n", false)
	show("SS", false) // could still be SSH: the ssh route holds the decision
	show("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n", false)
	show("GET / HTTP/1.1\r\nHost: other.example\r\n\r\n", false)
	show("SS", true) // the probe ended: what is undecided does not match
	// Output:
	// "SSH-2.0-OpenSSH_9.6\r\n": ssh
	// "SS": need more bytes
	// "GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n": web
	// "GET / HTTP/1.1\r\nHost: other.example\r\n\r\n": rest
	// "SS": rest
}
