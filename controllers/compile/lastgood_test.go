package compile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/portmux/portmux/api/v1alpha1"
	"github.com/portmux/portmux/controllers/compile"
)

// A Secret updated with a broken key pair keeps its previous certificate in
// service (with a finding), so a bad edit does not take the site down; a
// Secret that was never valid, or is deleted, brings the listener down.
func TestBrokenSecretUpdateKeepsTheLastGoodCertificate(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "certs", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "site", ResourceVersion: "1"},
		Data:       map[string][]byte{"tls.crt": read("example.com.crt.pem"), "tls.key": read("example.com.key.pem")},
	}
	broken := good.DeepCopy()
	broken.ResourceVersion = "2"
	broken.Data["tls.key"] = read("example.org.key.pem") // the key of another certificate
	pm := v1alpha1.PortMux{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "edge"},
		Spec: v1alpha1.PortMuxSpec{Listeners: []v1alpha1.Listener{{
			Name: "secure", Port: ptr.To[int32](443),
			TLS: &v1alpha1.ListenerTLS{CertificateRefs: []v1alpha1.SecretRef{{Name: "site"}}},
		}}},
	}
	key := types.NamespacedName{Namespace: "web", Name: "site"}
	compileWith := func(s *corev1.Secret, lastGood map[types.NamespacedName]*corev1.Secret) *compile.Output {
		in := compile.Input{PortMuxes: []v1alpha1.PortMux{pm}, LastGoodSecrets: lastGood, Secrets: map[types.NamespacedName]*corev1.Secret{}}
		if s != nil {
			in.Secrets[key] = s
		}
		return compile.Compile(in)
	}
	res := func(out *compile.Output) *compile.Result {
		return out.Results[types.NamespacedName{Namespace: "web", Name: "edge"}]
	}

	first := compileWith(good, nil)
	if len(first.Snapshot.Listeners) != 1 || first.GoodSecrets[key] != good {
		t.Fatalf("a valid Secret: %d listeners, good %v", len(first.Snapshot.Listeners), first.GoodSecrets)
	}

	second := compileWith(broken, first.GoodSecrets)
	if len(second.Snapshot.Listeners) != 1 {
		t.Fatal("a broken update took the listener down")
	}
	if cn := second.Snapshot.Listeners[0].TLS.Certificates[0].Certificate.Leaf.Subject.CommonName; cn != "www.example.com" {
		t.Fatalf("served %q, want the previous certificate", cn)
	}
	if refs := res(second).Refs; len(refs) != 1 || refs[0].Reason != compile.ReasonInvalidCertificate || !strings.Contains(refs[0].Message, "still serving its previous certificate") {
		t.Fatalf("findings %+v", refs)
	}
	if second.GoodSecrets[key] != good {
		t.Fatal("the last good Secret must carry over to the next compile")
	}

	if out := compileWith(broken, nil); len(out.Snapshot.Listeners) != 0 {
		t.Fatal("a Secret that was never valid must not be served")
	}
	if out := compileWith(nil, first.GoodSecrets); len(out.Snapshot.Listeners) != 0 || res(out).Refs[0].Reason != compile.ReasonSecretNotFound {
		t.Fatal("a deleted Secret must take its listener down")
	}
}
