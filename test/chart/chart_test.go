package chart

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// The chart's version, its appVersion and the image tag config/default
// deploys come from one place: Chart.yaml.
func TestVersionHasOneSource(t *testing.T) {
	var chart struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &chart)
	if chart.Version == "" || chart.Version != chart.AppVersion {
		t.Errorf("Chart.yaml: version %q and appVersion %q must be set and equal (the one release version)", chart.Version, chart.AppVersion)
	}
	var kust struct {
		Images []struct {
			Name   string `json:"name"`
			NewTag string `json:"newTag"`
		} `json:"images"`
	}
	readYAML(t, filepath.Join(repoRoot, "config", "manager", "kustomization.yaml"), &kust)
	if len(kust.Images) != 1 || kust.Images[0].NewTag != chart.AppVersion {
		t.Errorf("config/manager/kustomization.yaml images: %+v; want one image with newTag %q (Chart.yaml appVersion)", kust.Images, chart.AppVersion)
	}
}

// The chart's CRDs are copies of controller-gen's output (`make manifests`).
func TestCRDsAreGenerated(t *testing.T) {
	want := globBase(t, filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	got := globBase(t, filepath.Join(chartDir, "crds", "*.yaml"))
	if !slices.Equal(got, want) {
		t.Fatalf("charts/portmux/crds has %v, config/crd/bases has %v: run `make manifests`", got, want)
	}
	for _, name := range want {
		a := readFile(t, filepath.Join(repoRoot, "config", "crd", "bases", name))
		b := readFile(t, filepath.Join(chartDir, "crds", name))
		if a != b {
			t.Errorf("charts/portmux/crds/%s differs from config/crd/bases/%s: run `make manifests`", name, name)
		}
	}
}

func TestLint(t *testing.T) {
	requireHelm(t)
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", releaseNamespace}
			if c.values != "" {
				args = append(args, "--values", c.values)
			}
			if out, err := helm(t, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// The rendered chart, per values case, as golden files: a change to a
// template shows up in review as a change to testdata/golden. Rewrite them
// with `go test ./test/chart -run TestGolden -update`.
func TestGolden(t *testing.T) {
	requireHelm(t)
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			got, _ := render(t, c)
			path := filepath.Join("testdata", "golden", c.name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (create it with -update)", err)
			}
			if got != string(want) {
				t.Errorf("helm template with %s values differs from %s (rewrite with -update after checking the diff):\n%s",
					c.name, path, firstDiff(string(want), got))
			}
		})
	}
}

// expectation is what a values case must render.
type expectation struct {
	manager, dataplane, metrics string // object names; metrics "" = none
	replicas                    int32
	leaderElect                 bool
	args                        []string // flags after "manager", in order
	dataplaneArgs               []string // flags after "dataplane", in order
	unprivilegedPortStart       string   // "" = no sysctl
	serviceType                 corev1.ServiceType
	trafficPolicy               corev1.ServiceExternalTrafficPolicy
	servicePorts                []corev1.ServicePort
	managerPorts                []corev1.ContainerPort // all of them, in order
	dataplanePorts              []corev1.ContainerPort // the listeners', in order
	dataplaneMemory             string                 // the dataplane container's memory limit
	serviceMonitor, sa          bool
	pdb                         string // "minAvailable=N" or "maxUnavailable=N"; "" = none
}

// The control socket both containers mount, and where the manager's token
// is mounted.
const (
	socketFlag = "--socket=/run/portmux/dataplane.sock"
	tokenDir   = "/var/run/secrets/kubernetes.io/serviceaccount"
)

var expectations = map[string]expectation{
	"default": {
		manager: "portmux-controller-manager", dataplane: "portmux-dataplane", metrics: "portmux-metrics",
		replicas: 1, leaderElect: true,
		args: []string{"--dataplane-socket=/run/portmux/dataplane.sock", "--leader-elect", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080", "--metrics-secure", "--zap-log-level=info", "--port-policy=*=portmux-system",
			"--gateway-api=auto", "--gateway-address-service=portmux-system/portmux-dataplane", "--gateway-port-range=20000-20999", "--gateway-max-connections-per-client=512", "--gateway-max-connection-rate-per-client=64"},
		dataplaneArgs:         []string{socketFlag, "--zap-log-level=info"},
		unprivilegedPortStart: "0",
		serviceType:           corev1.ServiceTypeLoadBalancer, trafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		servicePorts: []corev1.ServicePort{{Name: "public", Port: 443, TargetPort: intstr.FromInt32(443), Protocol: corev1.ProtocolTCP}},
		managerPorts: []corev1.ContainerPort{
			{Name: "metrics", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
			{Name: "health", ContainerPort: 8081, Protocol: corev1.ProtocolTCP},
		},
		dataplanePorts:  []corev1.ContainerPort{{Name: "public", ContainerPort: 443, Protocol: corev1.ProtocolTCP}},
		dataplaneMemory: "512Mi",
		pdb:             "maxUnavailable=1", sa: true,
	},
	"custom": {
		manager: "portmux-controller-manager", dataplane: "portmux-dataplane", metrics: "portmux-metrics",
		replicas: 3, leaderElect: true,
		args: []string{"--dataplane-socket=/run/portmux/dataplane.sock", "--leader-elect", "--health-probe-bind-address=:8081", "--metrics-bind-address=:9090", "--metrics-secure", "--zap-log-level=debug",
			"--watch-namespace=team-a", "--watch-namespace=team-b", "--port-policy=443/udp=team-b", "--port-policy=443=team-a", "--port-policy=2222,10000-10999=team-a,team-b",
			"--allow-address-backends", "--gateway-api=on", "--gateway-address-service=portmux-system/portmux-dataplane",
			"--gateway-port-range=20000-20999", "--gateway-max-connections-per-client=512", "--gateway-max-connection-rate-per-client=64", "--leader-election-namespace=portmux-system"},
		dataplaneArgs:         []string{socketFlag, "--zap-log-level=debug", "--idle-timeout=1h", "--shutdown-grace=20s"},
		unprivilegedPortStart: "0",
		serviceType:           corev1.ServiceTypeNodePort, trafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		servicePorts: []corev1.ServicePort{
			{Name: "public", Port: 443, TargetPort: intstr.FromInt32(443), Protocol: corev1.ProtocolTCP, NodePort: 30443},
			{Name: "public-udp", Port: 443, TargetPort: intstr.FromInt32(443), Protocol: corev1.ProtocolUDP, NodePort: 30443},
			{Name: "ssh", Port: 22, TargetPort: intstr.FromInt32(2222), Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("ssh")},
		},
		managerPorts: []corev1.ContainerPort{
			{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
			{Name: "health", ContainerPort: 8081, Protocol: corev1.ProtocolTCP},
		},
		dataplanePorts: []corev1.ContainerPort{
			{Name: "public", ContainerPort: 443, Protocol: corev1.ProtocolTCP},
			{Name: "public-udp", ContainerPort: 443, Protocol: corev1.ProtocolUDP},
			{Name: "ssh", ContainerPort: 2222, Protocol: corev1.ProtocolTCP},
		},
		dataplaneMemory: "2Gi",
		serviceMonitor:  true, pdb: "minAvailable=2", sa: true,
	},
	"minimal": {
		manager: "edge-controller-manager", dataplane: "edge-dataplane",
		replicas: 1,
		args: []string{"--dataplane-socket=/run/portmux/dataplane.sock", "--health-probe-bind-address=:8081", "--metrics-bind-address=0", "--zap-log-level=info", "--port-policy=*=portmux-system",
			"--gateway-api=auto", "--gateway-address-service=portmux-system/edge-dataplane", "--gateway-port-range=20000-20999", "--gateway-max-connections-per-client=512", "--gateway-max-connection-rate-per-client=64"},
		dataplaneArgs: []string{socketFlag, "--zap-log-level=info"},
		servicePorts: []corev1.ServicePort{
			{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443), Protocol: corev1.ProtocolTCP},
		},
		serviceType:     corev1.ServiceTypeClusterIP,
		managerPorts:    []corev1.ContainerPort{{Name: "health", ContainerPort: 8081, Protocol: corev1.ProtocolTCP}},
		dataplanePorts:  []corev1.ContainerPort{{Name: "https", ContainerPort: 8443, Protocol: corev1.ProtocolTCP}},
		dataplaneMemory: "512Mi",
	},
}

// The Deployment runs two containers from the image: `portmux manager`,
// with the pod's only service account token, no capability and its probes
// on the health port, and `portmux dataplane`, with no token, only
// NET_BIND_SERVICE, the listener ports and exec probes on the control
// socket both mount; both with the restricted security context and the
// flags the values ask for. The dataplane Service's ports reach the
// dataplane's container ports.
func TestRenderedObjects(t *testing.T) {
	requireHelm(t)
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			want := expectations[c.name]
			_, objs := render(t, c)
			dep := into[appsv1.Deployment](t, mustFind(t, objs, "Deployment", want.manager))

			if got := ptrVal(dep.Spec.Replicas); got != want.replicas {
				t.Errorf("replicas = %d, want %d", got, want.replicas)
			}
			pod := dep.Spec.Template.Spec
			checkPodSecurity(t, pod.SecurityContext, want.unprivilegedPortStart)
			if names := containerNames(pod.Containers); !slices.Equal(names, []string{"manager", "dataplane"}) {
				t.Fatalf("containers %q, want manager and dataplane", names)
			}
			mgr, dp := pod.Containers[0], pod.Containers[1]
			checkContainerSecurity(t, "manager", mgr.SecurityContext)
			checkContainerSecurity(t, "dataplane", dp.SecurityContext, "NET_BIND_SERVICE")
			checkArgs(t, mgr, "manager", want.args)
			checkArgs(t, dp, "dataplane", want.dataplaneArgs)
			if got := slices.Contains(mgr.Args, "--leader-elect"); got != want.leaderElect {
				t.Errorf("--leader-elect present = %v, want %v", got, want.leaderElect)
			}
			if !reflect.DeepEqual(mgr.Ports, want.managerPorts) {
				t.Errorf("manager container ports:\n got %+v\nwant %+v", mgr.Ports, want.managerPorts)
			}
			if !reflect.DeepEqual(dp.Ports, want.dataplanePorts) {
				t.Errorf("dataplane container ports:\n got %+v\nwant %+v", dp.Ports, want.dataplanePorts)
			}
			checkProbe(t, "manager liveness", mgr.LivenessProbe, "/healthz")
			checkProbe(t, "manager readiness", mgr.ReadinessProbe, "/readyz")
			checkExecProbe(t, "dataplane liveness", dp.LivenessProbe, "/portmux", "dataplane", "probe", socketFlag)
			checkExecProbe(t, "dataplane readiness", dp.ReadinessProbe, "/portmux", "dataplane", "probe", "--ready", socketFlag)
			if got := dp.Resources.Limits.Memory().String(); got != want.dataplaneMemory {
				t.Errorf("dataplane memory limit %s, want %s (it sizes the dataplane)", got, want.dataplaneMemory)
			}
			checkCredentials(t, pod)

			svc := into[corev1.Service](t, mustFind(t, objs, "Service", want.dataplane))
			if svc.Spec.Type != want.serviceType || svc.Spec.ExternalTrafficPolicy != want.trafficPolicy {
				t.Errorf("dataplane Service type %q externalTrafficPolicy %q, want %q %q",
					svc.Spec.Type, svc.Spec.ExternalTrafficPolicy, want.serviceType, want.trafficPolicy)
			}
			if !reflect.DeepEqual(svc.Spec.Ports, want.servicePorts) {
				t.Errorf("dataplane Service ports:\n got %+v\nwant %+v", svc.Spec.Ports, want.servicePorts)
			}
			checkSelects(t, svc.Spec.Selector, dep)
			for _, p := range svc.Spec.Ports {
				if !slices.ContainsFunc(dp.Ports, func(cp corev1.ContainerPort) bool {
					return cp.ContainerPort == p.TargetPort.IntVal && cp.Protocol == p.Protocol
				}) {
					t.Errorf("Service port %s targets %s/%s, which the dataplane container does not declare", p.Name, p.TargetPort.String(), p.Protocol)
				}
			}

			if m := find(objs, "Service", want.metrics); (m != nil) != (want.metrics != "") {
				t.Errorf("metrics Service rendered = %v, want %v", m != nil, want.metrics != "")
			} else if m != nil {
				ms := into[corev1.Service](t, m)
				checkSelects(t, ms.Spec.Selector, dep)
				if len(ms.Spec.Ports) != 1 || ms.Spec.Ports[0].TargetPort != intstr.FromString("metrics") {
					t.Errorf("metrics Service ports %+v: want one, to the pod's metrics port", ms.Spec.Ports)
				}
			}
			if got := hasKind(objs, "ServiceMonitor"); got != want.serviceMonitor {
				t.Errorf("ServiceMonitor rendered = %v, want %v", got, want.serviceMonitor)
			}
			if p := find(objs, "PodDisruptionBudget", want.manager); (p != nil) != (want.pdb != "") {
				t.Errorf("PodDisruptionBudget rendered = %v, want %q", p != nil, want.pdb)
			} else if p != nil {
				pdb := into[policyv1.PodDisruptionBudget](t, p)
				var got []string
				if v := pdb.Spec.MinAvailable; v != nil {
					got = append(got, "minAvailable="+v.String())
				}
				if v := pdb.Spec.MaxUnavailable; v != nil {
					got = append(got, "maxUnavailable="+v.String())
				}
				if !slices.Equal(got, []string{want.pdb}) {
					t.Errorf("PodDisruptionBudget %v, want %s", got, want.pdb)
				}
				checkSelects(t, pdb.Spec.Selector.MatchLabels, dep)
			}
			if got := hasKind(objs, "ServiceAccount"); got != want.sa {
				t.Errorf("ServiceAccount rendered = %v, want %v", got, want.sa)
			}
			if got := slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool {
				return o.GetKind() == "Role" && strings.HasSuffix(o.GetName(), "-leader-election")
			}); got != want.leaderElect {
				t.Errorf("leader-election Role rendered = %v, want %v", got, want.leaderElect)
			}
			checkBindingsName(t, objs, pod.ServiceAccountName)
		})
	}
}

func checkPodSecurity(t *testing.T, sc *corev1.PodSecurityContext, portStart string) {
	t.Helper()
	if sc == nil {
		t.Fatal("no pod securityContext")
	}
	if !ptrVal(sc.RunAsNonRoot) || ptrVal(sc.RunAsUser) != 65532 || ptrVal(sc.RunAsGroup) != 65532 {
		t.Errorf("pod securityContext runAsNonRoot %v runAsUser %v runAsGroup %v: want true 65532 65532",
			ptrVal(sc.RunAsNonRoot), ptrVal(sc.RunAsUser), ptrVal(sc.RunAsGroup))
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile %+v, want RuntimeDefault", sc.SeccompProfile)
	}
	var want []corev1.Sysctl
	if portStart != "" {
		want = []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: portStart}}
	}
	if !reflect.DeepEqual(sc.Sysctls, want) {
		t.Errorf("pod sysctls %+v, want %+v", sc.Sysctls, want)
	}
}

// checkContainerSecurity checks the restricted profile, with exactly the
// capabilities add.
func checkContainerSecurity(t *testing.T, name string, sc *corev1.SecurityContext, add ...corev1.Capability) {
	t.Helper()
	if sc == nil {
		t.Fatalf("%s: no container securityContext", name)
	}
	if !ptrVal(sc.RunAsNonRoot) || ptrVal(sc.RunAsUser) != 65532 {
		t.Errorf("runAsNonRoot %v runAsUser %v, want true 65532", ptrVal(sc.RunAsNonRoot), ptrVal(sc.RunAsUser))
	}
	if !ptrVal(sc.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if ptrVal(sc.Privileged) {
		t.Error("privileged")
	}
	if sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, add) {
		t.Errorf("%s: capabilities %+v, want drop [ALL] add %v", name, sc.Capabilities, add)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", sc.SeccompProfile)
	}
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

// checkArgs checks that a container runs the image's entrypoint with a
// portmux command and then exactly the flags want.
func checkArgs(t *testing.T, c corev1.Container, command string, want []string) {
	t.Helper()
	if len(c.Command) != 0 || len(c.Args) == 0 || c.Args[0] != command {
		t.Errorf("%s: command %q args %q: want the image's entrypoint with args starting with %s", c.Name, c.Command, c.Args, command)
	} else if !slices.Equal(c.Args[1:], want) {
		t.Errorf("%s flags:\n got %q\nwant %q", command, c.Args[1:], want)
	}
}

// checkCredentials checks that the manager container alone gets the
// service account token, through the projected volume automounting would
// have made, and that both containers mount the control socket's emptyDir
// and nothing else they share.
func checkCredentials(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: every container would get the token")
	}
	mounts := map[string]map[string]corev1.VolumeMount{} // container -> path -> mount
	for _, c := range pod.Containers {
		mounts[c.Name] = map[string]corev1.VolumeMount{}
		for _, m := range c.VolumeMounts {
			mounts[c.Name][m.MountPath] = m
		}
	}
	if m, ok := mounts["manager"][tokenDir]; !ok || !m.ReadOnly || m.Name != "kube-api-access" {
		t.Errorf("the manager mounts %+v at %s, want kube-api-access read-only", m, tokenDir)
	}
	if _, ok := mounts["manager"]["/tmp"]; !ok {
		t.Error("the manager has no writable /tmp next to the read-only root filesystem")
	}
	if got := slices.Sorted(maps.Keys(mounts["dataplane"])); !slices.Equal(got, []string{"/run/portmux"}) {
		t.Errorf("the dataplane mounts %q, want only /run/portmux (the control socket)", got)
	}
	if mounts["manager"]["/run/portmux"].Name != "control" || mounts["dataplane"]["/run/portmux"].Name != "control" {
		t.Error("the two containers do not share the control volume at /run/portmux")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	if v := volumes["control"]; v.EmptyDir == nil {
		t.Errorf("the control volume %+v is not an emptyDir", v)
	}
	p := volumes["kube-api-access"].Projected
	if p == nil || len(p.Sources) != 3 || p.Sources[0].ServiceAccountToken == nil || p.Sources[0].ServiceAccountToken.Path != "token" ||
		p.Sources[1].ConfigMap == nil || p.Sources[1].ConfigMap.Name != "kube-root-ca.crt" ||
		p.Sources[2].DownwardAPI == nil || len(p.Sources[2].DownwardAPI.Items) != 1 || p.Sources[2].DownwardAPI.Items[0].Path != "namespace" {
		t.Errorf("kube-api-access %+v: want a projected token, the cluster's CA and the namespace, as automounting makes", volumes["kube-api-access"])
	}
}

func checkExecProbe(t *testing.T, what string, p *corev1.Probe, command ...string) {
	t.Helper()
	if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, command) {
		t.Errorf("%s probe %+v: want exec %q", what, p, command)
	}
	if p != nil && p.HTTPGet != nil || p != nil && p.TCPSocket != nil || p != nil && p.GRPC != nil {
		t.Errorf("%s probe %+v: the dataplane has no port for it", what, p)
	}
}

func checkProbe(t *testing.T, what string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe %+v: want an HTTP GET", what, p)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("health") {
		t.Errorf("%s probe GET %s on port %s, want %s on port health", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	}
}

// checkSelects fails unless the selector is non-empty and matches the pods.
func checkSelects(t *testing.T, sel map[string]string, dep *appsv1.Deployment) {
	t.Helper()
	if len(sel) == 0 {
		t.Error("empty selector")
	}
	for k, v := range sel {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod labels %v", k, v, dep.Spec.Template.Labels)
		}
	}
}

// checkBindingsName fails unless every binding's subject is the pod's
// ServiceAccount in the release namespace.
func checkBindingsName(t *testing.T, objs []*unstructured.Unstructured, sa string) {
	t.Helper()
	for _, o := range objs {
		subjects, _, ok := binding(t, o)
		if !ok {
			continue
		}
		want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: releaseNamespace}}
		if !reflect.DeepEqual(subjects, want) {
			t.Errorf("%s %s subjects %+v, want %+v", o.GetKind(), o.GetName(), subjects, want)
		}
	}
}

// binding returns the subjects and role of a ClusterRoleBinding or
// RoleBinding; ok is false for any other object.
func binding(t *testing.T, o *unstructured.Unstructured) (subjects []rbacv1.Subject, ref rbacv1.RoleRef, ok bool) {
	t.Helper()
	switch o.GetKind() {
	case "ClusterRoleBinding":
		b := into[rbacv1.ClusterRoleBinding](t, o)
		return b.Subjects, b.RoleRef, true
	case "RoleBinding":
		b := into[rbacv1.RoleBinding](t, o)
		return b.Subjects, b.RoleRef, true
	}
	return nil, rbacv1.RoleRef{}, false
}

// The chart's ClusterRole has exactly the rules controller-gen generated
// from the +kubebuilder:rbac markers.
func TestClusterRoleMatchesMarkers(t *testing.T) {
	requireHelm(t)
	var generated rbacv1.ClusterRole
	readYAML(t, filepath.Join(repoRoot, "config", "rbac", "role.yaml"), &generated)
	if len(generated.Rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	for _, c := range valuesCases {
		t.Run(c.name, func(t *testing.T) {
			_, objs := render(t, c)
			var roles []*rbacv1.ClusterRole
			for _, o := range objs {
				if o.GetKind() == "ClusterRole" && strings.HasSuffix(o.GetName(), "-manager") {
					roles = append(roles, into[rbacv1.ClusterRole](t, o))
				}
			}
			if len(roles) != 1 {
				t.Fatalf("%d manager ClusterRoles rendered, want 1", len(roles))
			}
			if !reflect.DeepEqual(roles[0].Rules, generated.Rules) {
				t.Errorf("ClusterRole %s rules differ from config/rbac/role.yaml (run `make manifests`):\n got %+v\nwant %+v",
					roles[0].Name, roles[0].Rules, generated.Rules)
			}
		})
	}
}

// values.schema.json and the templates refuse what would render a broken
// or dangerous release, with a message that names the problem.
func TestRefusedValues(t *testing.T) {
	requireHelm(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"--set", "replicas=3"}, "additional properties 'replicas'"},
		{"unknown nested key", []string{"--set", "service.typo=x"}, "additional properties 'typo'"},
		{"service type", []string{"--set", "service.type=ExternalName"}, "/service/type"},
		{"traffic policy", []string{"--set", "service.externalTrafficPolicy=Nowhere"}, "/service/externalTrafficPolicy"},
		{"port policy ports", []string{"--set-json", `portPolicy=[{"ports":"https","namespaces":["edge"]}]`}, "/portPolicy/0/ports"},
		{"port policy without namespaces", []string{"--set-json", `portPolicy=[{"ports":"443"}]`}, "missing property 'namespaces'"},
		{"no ports", []string{"--set-json", "service.ports=[]"}, "/service/ports': minItems"},
		{"long port name", []string{"--set", "service.ports[0].name=much-too-long-a-name", "--set", "service.ports[0].port=443"}, "/service/ports/0/name': maxLength"},
		{"port range", []string{"--set", "service.ports[0].name=p", "--set", "service.ports[0].port=70000"}, "/service/ports/0/port': maximum"},
		{"port name taken", []string{"--set", "service.ports[0].name=metrics", "--set", "service.ports[0].port=443"}, "already has"},
		{"duplicate port name", []string{"--set-json", `service.ports=[{"name":"a","port":1},{"name":"a","port":2}]`}, "used twice"},
		{"port protocol", []string{"--set-json", `service.ports=[{"name":"a","port":443,"protocol":"SCTP"}]`}, "/service/ports/0/protocol"},
		{"one port twice on one protocol", []string{"--set-json", `service.ports=[{"name":"a","port":443},{"name":"b","port":8443,"targetPort":443,"protocol":"TCP"}]`}, "both reach the dataplane's 443/TCP"},
		{"port policy transport", []string{"--set-json", `portPolicy=[{"ports":"443/sctp","namespaces":["edge"]}]`}, "/portPolicy/0/ports"},
		{"no leader election with replicas", []string{"--set", "leaderElection.enabled=false", "--set", "replicaCount=3"}, "needs replicaCount=1"},
		{"disruption bound", []string{"--set", "podDisruptionBudget.maxUnavailable=-1"}, "/podDisruptionBudget/maxUnavailable"},
		{"digest", []string{"--set", "image.digest=latest"}, "/image/digest"},
		{"pull policy", []string{"--set", "image.pullPolicy=Sometimes"}, "/image/pullPolicy"},
		{"service monitor switch", []string{"--set", "metrics.serviceMonitor.enabled=maybe"}, "/metrics/serviceMonitor/enabled"},
		{"log level", []string{"--set", "logLevel=loud"}, "/logLevel"},
		{"watch namespace", []string{"--set", "watchNamespaces[0]=Not_A_Namespace"}, "/watchNamespaces/0"},
		{"extra arg", []string{"--set", "extraArgs[0]=manager"}, "/extraArgs/0"},
		{"dataplane extra arg", []string{"--set", "dataplane.extraArgs[0]=dataplane"}, "/dataplane/extraArgs/0"},
		{"unknown dataplane key", []string{"--set", "dataplane.socket=/tmp/x.sock"}, "additional properties 'socket'"},
		{"sysctl", []string{"--set", "unprivilegedPortStart=-1"}, "/unprivilegedPortStart"},
		{"no service account", []string{"--set", "serviceAccount.create=false"}, "serviceAccount.name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", releaseName, chartDir, "--namespace", releaseNamespace}, tc.args...)
			out, err := helm(t, args...)
			if err == nil {
				t.Fatalf("helm template %s rendered:\n%s", strings.Join(tc.args, " "), out)
			}
			var he *helmError
			if !errors.As(err, &he) {
				t.Fatal(err)
			}
			if !strings.Contains(he.stderr, tc.want) {
				t.Errorf("helm's message does not mention %q:\n%s", tc.want, he.stderr)
			}
		})
	}
}

// metrics.serviceMonitor.enabled=auto renders a ServiceMonitor only where
// the cluster serves the CRD.
func TestServiceMonitorAuto(t *testing.T) {
	requireHelm(t)
	const api = "monitoring.coreos.com/v1/ServiceMonitor"
	for _, tc := range []struct {
		name string
		args []string
		want bool
	}{
		{"auto without the CRD", []string{"--set", "metrics.serviceMonitor.enabled=auto"}, false},
		{"auto with the CRD", []string{"--set", "metrics.serviceMonitor.enabled=auto", "--api-versions", api}, true},
		{"off with the CRD", []string{"--api-versions", api}, false},
		{"on without metrics", []string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.enabled=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, objs := render(t, valuesCase{name: tc.name}, tc.args...)
			if got := hasKind(objs, "ServiceMonitor"); got != tc.want {
				t.Errorf("ServiceMonitor rendered = %v, want %v", got, tc.want)
			}
		})
	}
}

// With metrics.secure (the default) the manager serves metrics over HTTPS
// to callers allowed to get /metrics: it is bound, cluster-wide even with
// watchNamespaces, to create TokenReviews and SubjectAccessReviews; a
// metrics-reader ClusterRole is there for scrapers; a ServiceMonitor
// scrapes over HTTPS with its service account token. Off, all of that
// goes and metrics are plain HTTP.
func TestMetricsSecureSwitch(t *testing.T) {
	requireHelm(t)
	sm := []string{"--set", "metrics.serviceMonitor.enabled=true"}
	for _, tc := range []struct {
		name   string
		args   []string
		secure bool
	}{
		{"secure by default", sm, true},
		{"secure with watched namespaces", append([]string{"--set", "watchNamespaces={team-a}"}, sm...), true},
		{"plain", append([]string{"--set", "metrics.secure=false"}, sm...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, objs := render(t, valuesCase{name: tc.name}, tc.args...)
			var args []string
			var scheme, bearer string
			auth, reader := false, false
			for _, o := range objs {
				switch {
				case o.GetKind() == "Deployment":
					for _, c := range into[appsv1.Deployment](t, o).Spec.Template.Spec.Containers {
						if c.Name == "manager" {
							args = c.Args
						}
					}
				case o.GetKind() == "ServiceMonitor":
					eps, _, _ := unstructured.NestedSlice(o.Object, "spec", "endpoints")
					if len(eps) == 1 {
						ep, _ := eps[0].(map[string]any)
						scheme, _ = ep["scheme"].(string)
						bearer, _ = ep["bearerTokenFile"].(string)
					}
				case o.GetKind() == "ClusterRole" && o.GetName() == releaseName+"-metrics-reader":
					r := into[rbacv1.ClusterRole](t, o)
					reader = len(r.Rules) == 1 && slices.Equal(r.Rules[0].NonResourceURLs, []string{"/metrics"}) && slices.Equal(r.Rules[0].Verbs, []string{"get"})
				case o.GetKind() == "ClusterRoleBinding" && o.GetName() == releaseName+"-metrics-auth":
					b := into[rbacv1.ClusterRoleBinding](t, o)
					auth = b.RoleRef.Name == releaseName+"-metrics-auth" && len(b.Subjects) == 1 &&
						b.Subjects[0].Kind == rbacv1.ServiceAccountKind && b.Subjects[0].Namespace == releaseNamespace
				}
			}
			wantScheme := map[bool]string{true: "https", false: "http"}[tc.secure]
			if got := slices.Contains(args, "--metrics-secure"); got != tc.secure {
				t.Errorf("--metrics-secure in the manager's flags = %v, want %v (%q)", got, tc.secure, args)
			}
			if scheme != wantScheme || (bearer != "") != tc.secure {
				t.Errorf("ServiceMonitor scheme %q, bearerTokenFile %q; want %s, token sent = %v", scheme, bearer, wantScheme, tc.secure)
			}
			if auth != tc.secure || reader != tc.secure {
				t.Errorf("metrics-auth bound to the manager cluster-wide = %v, metrics-reader = %v; want %v", auth, reader, tc.secure)
			}
		})
	}
}

func hasKind(objs []*unstructured.Unstructured, kind string) bool {
	return slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind })
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal([]byte(readFile(t, path)), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func globBase(t *testing.T, pattern string) []string {
	t.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	slices.Sort(names)
	return names
}

// firstDiff shows the first differing line of two texts, with its number.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n-" + wl + "\n+" + gl
		}
	}
	return "(identical lines; different line endings?)"
}

// ptrVal is *p, or the zero value for nil.
func ptrVal[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// With watchNamespaces the manager's rules are granted only in those
// namespaces (a RoleBinding to the ClusterRole in each), never cluster-wide;
// without, by one ClusterRoleBinding.
func TestManagerRulesBoundWhereWatched(t *testing.T) {
	requireHelm(t)
	for _, tc := range []struct {
		name string
		c    valuesCase
		// want lists "Kind namespace" of every binding to the manager's
		// ClusterRole.
		want []string
	}{
		{"cluster-wide", valuesCases[0], []string{"ClusterRoleBinding "}},
		{"watched namespaces", valuesCases[1], []string{"RoleBinding team-a", "RoleBinding team-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, objs := render(t, tc.c)
			var got []string
			for _, o := range objs {
				_, ref, ok := binding(t, o)
				if ok && ref.Kind == "ClusterRole" && ref.Name == releaseName+"-manager" {
					got = append(got, o.GetKind()+" "+o.GetNamespace())
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("bindings of the manager's ClusterRole: %q, want %q", got, tc.want)
			}
		})
	}
}

// TestNetworkPolicy: off by default; on, it admits the listener ports
// (every targetPort of service.ports) from listenerFrom and the metrics
// port from metricsFrom only, and with egress rules it restricts egress to
// DNS and those rules.
func TestNetworkPolicy(t *testing.T) {
	requireHelm(t)
	_, objs := render(t, valuesCases[0])
	for _, o := range objs {
		if o.GetKind() == "NetworkPolicy" {
			t.Fatalf("default values render NetworkPolicy %s", o.GetName())
		}
	}
	_, objs = render(t, valuesCases[1]) // custom: enabled, with egress
	np := into[networkingv1.NetworkPolicy](t, mustFind(t, objs, "NetworkPolicy", "portmux"))
	ports := func(r []networkingv1.NetworkPolicyPort) []string {
		var out []string
		for _, p := range r {
			s := p.Port.String()
			if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
				s += "/" + string(*p.Protocol)
			}
			out = append(out, s)
		}
		return out
	}
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("ingress rules: %+v, want the listeners' and the metrics'", np.Spec.Ingress)
	}
	if got := ports(np.Spec.Ingress[0].Ports); !slices.Equal(got, []string{"443", "443/UDP", "2222", "20000", "20000/UDP"}) {
		t.Errorf("listener ports %v, want the Service's targetPorts 443, 443/UDP and 2222, then the Gateway port range (TCP, UDP)", got)
	}
	if p := np.Spec.Ingress[0].Ports[3]; p.EndPort == nil || *p.EndPort != 20999 {
		t.Errorf("Gateway port range rule %+v, want 20000-20999", p)
	}
	if from := np.Spec.Ingress[0].From; len(from) != 1 || from[0].IPBlock == nil || from[0].IPBlock.CIDR != "0.0.0.0/0" {
		t.Errorf("listeners from %+v, want listenerFrom", from)
	}
	if got := ports(np.Spec.Ingress[1].Ports); !slices.Equal(got, []string{"9090"}) || len(np.Spec.Ingress[1].From) == 0 {
		t.Errorf("metrics rule %+v, want port 9090 from metricsFrom only", np.Spec.Ingress[1])
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || len(np.Spec.Egress) != 3 ||
		!slices.Equal(ports(np.Spec.Egress[0].Ports), []string{"53/UDP", "53"}) {
		t.Errorf("egress %+v, want DNS and the two rules of the values", np.Spec.Egress)
	}
}
