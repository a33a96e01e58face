#!/bin/sh
# Prints a kind: Secret document for `portmux serve -f`, from files you
# already have:
#
#   secret.sh tls NAME CERT.pem KEY.pem   a kubernetes.io/tls Secret (a chain
#                                         such as certbot's fullchain.pem works)
#   secret.sh token NAME TOKEN_FILE       a tunnel token under the key "token"
#
# Append several to one file and give it to serve with the PortMux:
#
#   sh secret.sh tls www-tls fullchain.pem privkey.pem  > secrets.yaml
#   sh secret.sh token tunnel-token token              >> secrets.yaml
#   chmod 600 secrets.yaml
#   portmux serve -f portmux.yaml -f secrets.yaml
#
# Run it again (and rename the new file over the old one) when a
# certificate is renewed: serve picks the change up without a restart.
set -eu

block() { # KEY FILE: a YAML literal block holding FILE's text
	[ -r "$2" ] || { echo "secret.sh: cannot read $2" >&2; exit 1; }
	printf '  %s: |\n' "$1"
	awk '{ print "    " $0 }' "$2"
}

case "${1:-}" in
tls)
	[ $# -eq 4 ] || { echo "usage: secret.sh tls NAME CERT.pem KEY.pem" >&2; exit 2; }
	printf -- '---\napiVersion: v1\nkind: Secret\nmetadata: {name: %s}\ntype: kubernetes.io/tls\nstringData:\n' "$2"
	block tls.crt "$3"
	block tls.key "$4"
	;;
token)
	[ $# -eq 3 ] || { echo "usage: secret.sh token NAME TOKEN_FILE" >&2; exit 2; }
	printf -- '---\napiVersion: v1\nkind: Secret\nmetadata: {name: %s}\nstringData:\n' "$2"
	block token "$3"
	;;
*)
	echo "usage: secret.sh tls NAME CERT.pem KEY.pem | secret.sh token NAME TOKEN_FILE" >&2
	exit 2
	;;
esac
