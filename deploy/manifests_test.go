package deploy

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	sidecarDir      = "sidecar"
	exampleManifest = "../examples/manifests/sox-financial.json"
	copiedManifest  = "sidecar/base/sox-financial.json"
	basePrincipals  = "sidecar/base/principals.yaml"
	baseConfig      = "sidecar/base/config.yaml"
	baseAdminTokens = "sidecar/base/admin-tokens.yaml"

	proxyContainer = "uapk-proxy"
	agentContainer = "agent"
	proxyUID       = 65532
	upstream       = "https://erp.internal.example.com"
	caSecret       = "uapk-proxy-ca"
	s3Secret       = "uapk-proxy-s3"
	// The ERP's credential: read by the proxy container, never by the agent.
	erpSecret = "uapk-proxy-erp"
	// The approver tooling's admin token (README, "Approvers and the admin
	// API"): no container of the agent's pod may read it, the proxy included
	// (it needs only the hashes).
	adminTokenSecret = "uapk-proxy-admin-token"
	// The fleet's PostgreSQL password and CA (deploy/fleet): read by the
	// proxy container and the hubs, never by the agent.
	pgSecret = "uapk-proxy-postgres"
	// The proxy's drain (in-flight forwards, held requests answered 202,
	// ledger flush) takes up to 30 s after the agent has exited.
	minGracePeriod = 60
)

// serveEnv is every serve flag of docs/reference.md#commands as its UAPK_* variable. A
// misspelt variable is ignored by the proxy, so it is an error here.
var serveEnv = []string{
	"UAPK_MANIFEST", "UAPK_PRINCIPALS", "UAPK_UPSTREAM", "UAPK_SIDECAR_ADDR",
	"UAPK_PROXY_ADDR", "UAPK_ADMIN_ADDR", "UAPK_DATA_DIR", "UAPK_MAX_BODY",
	"UAPK_CA_DIR", "UAPK_UPSTREAM_CA", "UAPK_CONFIG", "UAPK_LOG_LEVEL",
	"UAPK_MAX_RESPONSE", "UAPK_UPSTREAM_TIMEOUT", "UAPK_ADMIN_TOKENS",
	"UAPK_SHUTDOWN_GRACE", "UAPK_PRINT_CONFIG",
}

type shape int

const (
	sidecarURL shape = iota // the agent calls http://127.0.0.1:8081
	httpProxy               // the agent calls the ERP through HTTP_PROXY
)

// build runs kustomize on dir exactly as `kubectl apply -k dir` would (the
// default load restrictor included) and decodes every object strictly.
func build(t *testing.T, dir string) *objects {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	objs := &objects{configMaps: map[string]*corev1.ConfigMap{}, claims: map[string]*corev1.PersistentVolumeClaim{},
		secrets: map[string]*corev1.Secret{}, services: map[string]*corev1.Service{}}
	for _, r := range res.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		obj, err := decodeStrict(y)
		if err != nil {
			t.Errorf("%s: %s: %v", dir, r.CurId(), err)
			continue
		}
		objs.add(t, obj)
	}
	if t.Failed() {
		t.FailNow()
	}
	return objs
}

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// decodeStrict decodes one object into its Kubernetes API type. Unknown and
// duplicate fields are errors, and so is a kind the scheme does not know.
func decodeStrict(y []byte) (runtime.Object, error) {
	codecs := serializer.NewCodecFactory(scheme, serializer.EnableStrict)
	obj, _, err := codecs.UniversalDeserializer().Decode(y, nil, nil)
	if err != nil {
		return nil, err
	}
	return obj, nil
}

type objects struct {
	configMaps  map[string]*corev1.ConfigMap
	claims      map[string]*corev1.PersistentVolumeClaim
	secrets     map[string]*corev1.Secret
	services    map[string]*corev1.Service
	deployments []*appsv1.Deployment
	jobs        []*batchv1.Job
	netpols     []*networkingv1.NetworkPolicy
}

func (o *objects) add(t *testing.T, obj runtime.Object) {
	t.Helper()
	switch v := obj.(type) {
	case *corev1.ConfigMap:
		o.configMaps[v.Name] = v
	case *corev1.PersistentVolumeClaim:
		o.claims[v.Name] = v
	case *corev1.Secret:
		o.secrets[v.Name] = v
	case *corev1.Service:
		o.services[v.Name] = v
	case *appsv1.Deployment:
		o.deployments = append(o.deployments, v)
	case *batchv1.Job:
		o.jobs = append(o.jobs, v)
	case *networkingv1.NetworkPolicy:
		o.netpols = append(o.netpols, v)
	default:
		t.Errorf("unexpected object %T", obj)
	}
}

// workload is a pod template with where it came from.
type workload struct {
	id     string
	labels map[string]string
	pod    *corev1.PodSpec
}

func (o *objects) workloads() []workload {
	var ws []workload
	for _, d := range o.deployments {
		ws = append(ws, workload{"Deployment/" + d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec})
	}
	for _, j := range o.jobs {
		ws = append(ws, workload{"Job/" + j.Name, j.Spec.Template.Labels, &j.Spec.Template.Spec})
	}
	return ws
}

func TestKustomizations(t *testing.T) {
	// Both components at once, as the persistent overlay's comment tells
	// users to write: they must not fight over the same fields. Kustomize
	// takes only relative paths.
	combined := t.TempDir()
	rel := func(p string) string {
		a, err := filepath.Abs(p)
		if err == nil {
			a, err = filepath.Rel(combined, a)
		}
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%q]\ncomponents: [%q, %q]\n",
		rel("sidecar/base"), rel("sidecar/components/http-proxy"), rel("sidecar/components/persistent"))
	if err := os.WriteFile(filepath.Join(combined, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		dir        string
		shape      shape
		persistent bool
	}{
		{"default (kubectl apply -k deploy/sidecar)", sidecarDir, sidecarURL, false},
		{"base", "sidecar/base", sidecarURL, false},
		{"overlays/http-proxy", "sidecar/overlays/http-proxy", httpProxy, false},
		{"overlays/persistent", "sidecar/overlays/persistent", sidecarURL, true},
		{"both components", combined, httpProxy, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := build(t, tc.dir)
			if len(objs.deployments) != 1 || len(objs.jobs) != 1 || len(objs.netpols) != 1 || len(objs.secrets) != 0 || len(objs.services) != 0 {
				t.Fatalf("want 1 Deployment, 1 Job, 1 NetworkPolicy; got %d, %d, %d",
					len(objs.deployments), len(objs.jobs), len(objs.netpols))
			}
			checkConfigMaps(t, objs)
			checkDeployment(t, objs.deployments[0])
			checkJob(t, objs.jobs[0])
			claims := map[string]string{}
			for _, w := range objs.workloads() {
				t.Run(w.id, func(t *testing.T) {
					checkPod(t, objs, w, tc.shape, tc.persistent, claims)
				})
			}
			checkNetworkPolicy(t, objs.netpols[0], objs.workloads(), 53, 443)
			if !tc.persistent && len(objs.claims) != 0 {
				t.Errorf("unexpected PersistentVolumeClaims: %v", keys(objs.claims))
			}
			for name, c := range objs.claims {
				if !slices.Equal(c.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
					t.Errorf("PersistentVolumeClaim %s: access modes %v, want [ReadWriteOnce]", name, c.Spec.AccessModes)
				}
				if _, used := claims[name]; !used {
					t.Errorf("PersistentVolumeClaim %s is used by no workload", name)
				}
			}
		})
	}
}

func checkConfigMaps(t *testing.T, objs *objects) {
	t.Helper()
	type generated struct{ prefix, key, file string }
	want := []generated{
		{"uapk-proxy-manifest-", "sox-financial.json", exampleManifest},
		{"uapk-proxy-principals-", "principals.yaml", basePrincipals},
		{"uapk-proxy-config-", "config.yaml", baseConfig},
		{"uapk-proxy-admin-tokens-", "admin-tokens.yaml", baseAdminTokens},
	}
	var found int
	for name, cm := range objs.configMaps {
		i := slices.IndexFunc(want, func(w generated) bool { return strings.HasPrefix(name, w.prefix) })
		if i < 0 {
			t.Errorf("unexpected ConfigMap %s", name)
			continue
		}
		found++
		if got := cm.Data[want[i].key]; got != string(readFile(t, want[i].file)) {
			t.Errorf("ConfigMap %s: %s differs from %s", name, want[i].key, want[i].file)
		}
		if cm.Namespace != "" {
			t.Errorf("ConfigMap %s: namespace %q set; leave it to kubectl -n", name, cm.Namespace)
		}
	}
	if found != len(want) {
		t.Errorf("want the manifest, principals, config and admin tokens ConfigMaps (with hash suffixes), got %v", keys(objs.configMaps))
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	// One ledger per pod, and a claim only one proxy may open.
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("Deployment %s: replicas must be 1", d.Name)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("Deployment %s: strategy %q, want Recreate", d.Name, d.Spec.Strategy.Type)
	}
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("Deployment %s: selector does not match its pod template", d.Name)
	}
	if d.Namespace != "" {
		t.Errorf("Deployment %s: namespace set", d.Name)
	}
}

func checkJob(t *testing.T, j *batchv1.Job) {
	t.Helper()
	if j.Spec.Suspend == nil || !*j.Spec.Suspend {
		t.Errorf("Job %s: must be suspended, so that applying the example does not post entries", j.Name)
	}
	if j.Spec.Parallelism == nil || *j.Spec.Parallelism != 1 {
		t.Errorf("Job %s: parallelism must be 1", j.Name)
	}
	if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit > 2 {
		t.Errorf("Job %s: backoffLimit must be set and small (each retry posts the entries again)", j.Name)
	}
	if rp := j.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyNever && rp != corev1.RestartPolicyOnFailure {
		t.Errorf("Job %s: pod restartPolicy %q", j.Name, rp)
	}
	if j.Spec.TTLSecondsAfterFinished != nil {
		t.Errorf("Job %s: ttlSecondsAfterFinished deletes the pod, and an emptyDir ledger with it", j.Name)
	}
}

func checkPod(t *testing.T, objs *objects, w workload, sh shape, persistent bool, claims map[string]string) {
	pod := w.pod
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false: neither container talks to the API server")
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < minGracePeriod {
		t.Errorf("terminationGracePeriodSeconds must be at least %d (agent exit, then the proxy's drain)", minGracePeriod)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot must be true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile must be RuntimeDefault")
	}
	if psc == nil || psc.FSGroup == nil || *psc.FSGroup != proxyUID {
		t.Errorf("pod fsGroup must be %d so the proxy can write its data volume", proxyUID)
	}

	// The native sidecar.
	var proxy *corev1.Container
	for i := range pod.InitContainers {
		c := &pod.InitContainers[i]
		if c.Name == proxyContainer {
			proxy = c
		} else if c.RestartPolicy != nil {
			t.Errorf("init container %s: restartPolicy set on a container that is not the proxy", c.Name)
		}
	}
	if proxy == nil {
		t.Fatalf("no init container %q", proxyContainer)
	}
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatal("the proxy must be an init container with restartPolicy: Always (a native sidecar)")
	}
	for _, c := range pod.Containers {
		if c.Name == proxyContainer {
			t.Error("the proxy must not also be a regular container: it would block Job completion")
		}
	}
	agent := container(pod.Containers, agentContainer)
	if agent == nil {
		t.Fatalf("no container %q", agentContainer)
	}

	env := envMap(t, proxy)
	for name := range env {
		if strings.HasPrefix(name, "UAPK_") && !slices.Contains(serveEnv, name) {
			t.Errorf("proxy env %s is not a serve flag (docs/reference.md#commands); the proxy would ignore it", name)
		}
	}
	if proxy.Args != nil && !slices.Equal(proxy.Args, []string{"serve"}) || proxy.Command != nil {
		t.Errorf("proxy command %v args %v: want the image's entrypoint with args [serve]", proxy.Command, proxy.Args)
	}
	if got := env["UAPK_UPSTREAM"]; got != upstream {
		t.Errorf("UAPK_UPSTREAM = %q, want %q", got, upstream)
	}
	for _, name := range []string{"UAPK_SIDECAR_ADDR", "UAPK_PROXY_ADDR"} {
		if host := hostOf(t, env[name]); host != "127.0.0.1" {
			t.Errorf("%s = %q: the agent's doors must listen on 127.0.0.1 only", name, env[name])
		}
	}
	adminHost, adminPort := splitAddr(t, env["UAPK_ADMIN_ADDR"])
	if ip := net.ParseIP(adminHost); adminHost != "" && (ip == nil || !ip.IsUnspecified()) {
		t.Errorf("UAPK_ADMIN_ADDR = %q: the kubelet probes from the node, so the admin API must listen on the pod IP", env["UAPK_ADMIN_ADDR"])
	}
	checkProbes(t, proxy, adminPort)
	checkSecurityContext(t, proxy.Name, proxy.SecurityContext, true)
	checkResources(t, proxy)
	checkImage(t, proxy)

	// S3 credentials: references to an optional Secret, never values.
	for _, e := range proxy.Env {
		if strings.HasPrefix(e.Name, "AWS_") {
			ref := e.ValueFrom
			if e.Value != "" || ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != s3Secret ||
				ref.SecretKeyRef.Optional == nil || !*ref.SecretKeyRef.Optional {
				t.Errorf("env %s: want an optional secretKeyRef to %s, not a value", e.Name, s3Secret)
			}
		}
	}
	for _, name := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		if _, ok := env[name]; !ok {
			t.Errorf("proxy env %s: missing the S3 credential reference", name)
		}
	}

	// Files the proxy reads come from the ConfigMaps in this build.
	vols := volumeMap(pod)
	manifest := fileFromConfigMap(t, objs, proxy, vols, env["UAPK_MANIFEST"])
	if manifest != string(readFile(t, exampleManifest)) {
		t.Errorf("UAPK_MANIFEST %s is not examples/manifests/sox-financial.json", env["UAPK_MANIFEST"])
	}
	fileFromConfigMap(t, objs, proxy, vols, env["UAPK_PRINCIPALS"])

	// Who in the pod can read the ERP credential, the admin tokens and the
	// data volume, and what the probes send.
	for _, p := range accessProblems(objs, pod) {
		t.Error(p)
	}

	// The data dir: a writable volume; a claim in the persistent shape.
	dataMount := mountAt(proxy, env["UAPK_DATA_DIR"])
	if dataMount == nil || dataMount.ReadOnly {
		t.Fatalf("UAPK_DATA_DIR %q is not a writable volume mount of the proxy", env["UAPK_DATA_DIR"])
	}
	data := vols[dataMount.Name]
	switch {
	case data == nil:
		t.Fatalf("volume %s not found", dataMount.Name)
	case persistent && data.PersistentVolumeClaim == nil:
		t.Errorf("data volume %s: want a PersistentVolumeClaim", data.Name)
	case persistent:
		claim := data.PersistentVolumeClaim.ClaimName
		if _, ok := objs.claims[claim]; !ok {
			t.Errorf("data volume: claim %s is not in the build", claim)
		}
		if other, ok := claims[claim]; ok {
			t.Errorf("claim %s is used by %s too: one proxy per ledger", claim, other)
		}
		claims[claim] = w.id
	case data.EmptyDir == nil:
		t.Errorf("data volume %s: want an emptyDir in the base", data.Name)
	case data.EmptyDir.SizeLimit != nil:
		t.Error("data emptyDir has a sizeLimit: going over it evicts the pod and deletes the ledger")
	}

	// Every mount names a volume; Secrets are only the ones the README
	// tells users to create, ConfigMaps only those of this build.
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, m := range c.VolumeMounts {
			if vols[m.Name] == nil {
				t.Errorf("container %s mounts unknown volume %s", c.Name, m.Name)
			}
		}
	}
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			if objs.configMaps[v.ConfigMap.Name] == nil {
				t.Errorf("volume %s: ConfigMap %s is not in the build", v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if v.Secret.SecretName != caSecret && v.Secret.SecretName != erpSecret && v.Secret.SecretName != pgSecret {
				t.Errorf("volume %s: unexpected Secret %s", v.Name, v.Secret.SecretName)
			}
		}
	}

	// The agent: restricted like the proxy, but as another user.
	checkSecurityContext(t, agent.Name, agent.SecurityContext, false)
	if sc := agent.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == proxyUID {
		t.Errorf("agent runs as the proxy's user %d; give it its own so egress can be told apart", proxyUID)
	}
	checkResources(t, agent)
	checkImage(t, agent)
	for _, c := range pod.InitContainers {
		checkImage(t, &c)
	}

	agentEnv := envMap(t, agent)
	sidecarURLWant := "http://" + env["UAPK_SIDECAR_ADDR"]
	proxyURL := "http://" + env["UAPK_PROXY_ADDR"]
	proxyVars := []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}
	switch sh {
	case sidecarURL:
		if got := agentEnv["ERP_BASE_URL"]; got != sidecarURLWant {
			t.Errorf("agent ERP_BASE_URL = %q, want the sidecar door %q", got, sidecarURLWant)
		}
		for _, name := range proxyVars {
			if _, ok := agentEnv[name]; ok {
				t.Errorf("agent has %s in the sidecar-URL shape", name)
			}
		}
		if _, ok := env["UAPK_CA_DIR"]; ok {
			t.Error("UAPK_CA_DIR set in the sidecar-URL shape")
		}
	case httpProxy:
		if got := agentEnv["ERP_BASE_URL"]; got != upstream {
			t.Errorf("agent ERP_BASE_URL = %q, want the ERP's own URL %q", got, upstream)
		}
		for _, name := range proxyVars {
			if got := agentEnv[name]; got != proxyURL {
				t.Errorf("agent %s = %q, want the forward door %q", name, got, proxyURL)
			}
		}
		for _, name := range []string{"NO_PROXY", "no_proxy"} {
			if !slices.Contains(strings.Split(agentEnv[name], ","), "127.0.0.1") {
				t.Errorf("agent %s = %q: the admin API on 127.0.0.1 must not go through the forward door", name, agentEnv[name])
			}
		}
		caDir := env["UAPK_CA_DIR"]
		m := mountAt(proxy, caDir)
		if m == nil || vols[m.Name].Secret == nil || vols[m.Name].Secret.SecretName != caSecret || len(vols[m.Name].Secret.Items) != 0 {
			t.Errorf("UAPK_CA_DIR %q: want the whole Secret %s (ca.pem and ca.key) mounted there", caDir, caSecret)
		}
		for _, name := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} {
			checkAgentCA(t, agent, vols, name, agentEnv[name])
		}
	}
	// Whatever the shape, the agent never sees the CA key.
	for _, m := range agent.VolumeMounts {
		if s := vols[m.Name].Secret; s != nil {
			if len(s.Items) == 0 {
				t.Errorf("agent mounts the whole Secret %s: the CA key would be readable", s.SecretName)
			}
			for _, it := range s.Items {
				if it.Key != "ca.pem" {
					t.Errorf("agent mounts key %s of Secret %s", it.Key, s.SecretName)
				}
			}
		}
	}
}

// checkAgentCA wants path to be ca.pem from the CA Secret, mounted in the agent.
func checkAgentCA(t *testing.T, agent *corev1.Container, vols map[string]*corev1.Volume, name, path string) {
	t.Helper()
	dir, file := filepath.Split(path)
	m := mountAt(agent, filepath.Clean(dir))
	if m == nil {
		t.Errorf("agent %s = %q is not in a volume mount", name, path)
		return
	}
	s := vols[m.Name].Secret
	if s == nil || s.SecretName != caSecret || !slices.ContainsFunc(s.Items, func(it corev1.KeyToPath) bool {
		return it.Key == "ca.pem" && it.Path == file
	}) {
		t.Errorf("agent %s = %q: want ca.pem of Secret %s", name, path, caSecret)
	}
}

func checkProbes(t *testing.T, c *corev1.Container, adminPort int) {
	t.Helper()
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		// The startupProbe is what holds the agent back until the ledger
		// is writable: the kubelet starts the next container only after a
		// native sidecar's startupProbe succeeds.
		{"startupProbe", c.StartupProbe, "/readyz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/livez"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s: path %q, want %q", p.name, g.Path, p.path)
		}
		if port := resolvePort(t, c, g.Port); port != adminPort {
			t.Errorf("%s: port %d, want the admin port %d of UAPK_ADMIN_ADDR", p.name, port, adminPort)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s: scheme %s", p.name, g.Scheme)
		}
	}
}

func checkSecurityContext(t *testing.T, name string, sc *corev1.SecurityContext, isProxy bool) {
	t.Helper()
	if sc == nil {
		t.Errorf("container %s: no securityContext", name)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("container %s: runAsNonRoot must be true", name)
	}
	if isProxy && (sc.RunAsUser == nil || *sc.RunAsUser != proxyUID) {
		t.Errorf("container %s: runAsUser must be %d (the image's nonroot user)", name, proxyUID)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s: allowPrivilegeEscalation must be false", name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container %s: readOnlyRootFilesystem must be true", name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container %s: privileged", name)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container %s: capabilities must drop ALL and add none", name)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container %s: seccompProfile must be RuntimeDefault", name)
	}
}

func checkResources(t *testing.T, c *corev1.Container) {
	t.Helper()
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		if !okReq || !okLim {
			t.Errorf("container %s: %s request and limit must both be set", c.Name, r)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("container %s: %s request %s above limit %s", c.Name, r, req.String(), lim.String())
		}
	}
}

// checkImage wants a registry path and a pinned tag or digest, never latest.
func checkImage(t *testing.T, c *corev1.Container) {
	t.Helper()
	img := c.Image
	name, digest, hasDigest := strings.Cut(img, "@")
	if hasDigest && !strings.HasPrefix(digest, "sha256:") {
		t.Errorf("container %s: image %q: bad digest", c.Name, img)
	}
	tag := ""
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, tag = name[:i], name[i+1:]
	}
	switch {
	case !strings.Contains(name, "/"):
		t.Errorf("container %s: image %q: not rewritten by the kustomization's images", c.Name, img)
	case tag == "" && !hasDigest:
		t.Errorf("container %s: image %q: no tag or digest (means latest)", c.Name, img)
	case tag == "latest":
		t.Errorf("container %s: image %q: latest", c.Name, img)
	}
}

// checkNetworkPolicy wants np to select every workload of ws and to allow
// egress only on the given ports (53 DNS, 443 the ERP, and 5432 PostgreSQL
// in a fleet).
func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, ws []workload, egressPorts ...int) {
	t.Helper()
	for _, w := range ws {
		if len(np.Spec.PodSelector.MatchExpressions) != 0 || len(np.Spec.PodSelector.MatchLabels) == 0 ||
			!selects(np.Spec.PodSelector.MatchLabels, w.labels) {
			t.Errorf("NetworkPolicy %s does not select the pods of %s", np.Name, w.id)
		}
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) ||
		!slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("NetworkPolicy %s: policyTypes %v, want Ingress and Egress", np.Name, np.Spec.PolicyTypes)
	}
	// Egress: DNS and the ERP's HTTPS port, each to a named peer. A rule
	// with no peers or no ports would allow everything.
	for i, r := range np.Spec.Egress {
		if len(r.To) == 0 || len(r.Ports) == 0 {
			t.Errorf("egress rule %d allows any peer or any port", i)
		}
		for _, p := range r.Ports {
			if p.Port == nil || !slices.Contains(egressPorts, p.Port.IntValue()) {
				t.Errorf("egress rule %d: port %v, want one of %v", i, p.Port, egressPorts)
			}
		}
		for _, peer := range r.To {
			if peer.IPBlock != nil && peer.IPBlock.CIDR == "0.0.0.0/0" {
				t.Errorf("egress rule %d: 0.0.0.0/0 lets the agent reach anything", i)
			}
		}
	}
	// Ingress: the admin port only, and only from a named peer.
	for i, r := range np.Spec.Ingress {
		if len(r.From) == 0 {
			t.Errorf("ingress rule %d allows any peer", i)
		}
		if len(r.Ports) == 0 {
			t.Errorf("ingress rule %d allows any port", i)
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.Port.IntValue() != 8090 {
				t.Errorf("ingress rule %d: port %v, want only the admin port 8090", i, p.Port)
			}
		}
	}
}

// accessProblems checks who in the pod can read what (docs/reference.md#upstream-credentials,
// #admin-tokens, #health): the proxy reads the ERP credential through
// upstream_auth from the Secret erpSecret, mounted so that rotation is seen,
// and the admin tokens' hashes from a ConfigMap; no other container reads
// that Secret, the approver tooling's token, or the data volume; probes hit
// only the public /livez and /readyz and carry no Authorization. It returns
// the problems rather than failing a test, so that TestAccessProblems can
// show each one is caught.
func accessProblems(objs *objects, pod *corev1.PodSpec) []string {
	proxy := container(pod.InitContainers, proxyContainer)
	if proxy == nil {
		return []string{"no proxy container " + proxyContainer}
	}
	vols := volumeMap(pod)
	env := map[string]string{}
	for _, e := range proxy.Env {
		env[e.Name] = e.Value
	}

	var ps []string
	if pod.ShareProcessNamespace != nil && *pod.ShareProcessNamespace {
		ps = append(ps, "shareProcessNamespace: the agent would see the proxy's processes, and through /proc what they hold")
	}
	cfg, more := proxyConfig(objs, proxy, vols, env)
	ps = append(ps, more...)
	if cfg != nil {
		ps = append(ps, upstreamAuthProblems(proxy, vols, cfg.UpstreamAuth)...)
	}
	ps = append(ps, adminTokenProblems(objs, proxy, vols, env, cfg)...)

	var data string
	if m := mountAt(proxy, env["UAPK_DATA_DIR"]); m != nil {
		data = m.Name
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, r := range secretRefs(&c, vols) {
			switch {
			case r.secret == adminTokenSecret:
				ps = append(ps, fmt.Sprintf("container %s reads Secret %s (%s): the approver tooling's admin token stays out of the agent's pod", c.Name, r.secret, r.via))
			case r.secret == erpSecret && c.Name != proxyContainer:
				ps = append(ps, fmt.Sprintf("container %s reads the ERP credential, Secret %s (%s): only %s may", c.Name, r.secret, r.via, proxyContainer))
			case r.secret == pgSecret && c.Name != proxyContainer:
				ps = append(ps, fmt.Sprintf("container %s reads the fleet's PostgreSQL password, Secret %s (%s): only %s may", c.Name, r.secret, r.via, proxyContainer))
			}
		}
		ps = append(ps, probeProblems(&c)...)
		if c.Name != proxyContainer {
			ps = append(ps, outsiderProblems(&c, vols, data)...)
		}
	}
	return ps
}

// configFile is the proxy's --config file: flags as keys, and sections
// decoded as strictly as the proxy does (docs/reference.md#configuration-file).
type configFile struct {
	flags        map[string]string
	UpstreamAuth *upstreamAuth
	Approvals    *approvalsConfig
	UI           *uiConfig
	Archive      *archiveConfig
}

// approvalsConfig is the approvals: section (docs/reference.md#many-proxies).
type approvalsConfig struct {
	Postgres string `json:"postgres"`
	Instance string `json:"instance"`
}

// uiConfig is the ui: section (docs/reference.md#dashboard).
type uiConfig struct {
	URL     string `json:"url"`
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
}

type upstreamAuth struct {
	Header    string   `json:"header"`
	ValueFile string   `json:"value_file"`
	Origins   []string `json:"origins"`
	OAuth2    *struct {
		TokenURL         string   `json:"token_url"`
		ClientID         string   `json:"client_id"`
		ClientSecretFile string   `json:"client_secret_file"`
		Scopes           []string `json:"scopes"`
	} `json:"oauth2"`
}

type identityConfig struct {
	JWKS     string `json:"jwks"`
	Issuer   string `json:"issuer"`
	Audience string `json:"audience"`
	Claim    string `json:"claim"`
}

type archiveConfig struct {
	S3 *struct {
		Bucket    string `json:"bucket"`
		Prefix    string `json:"prefix"`
		Region    string `json:"region"`
		Endpoint  string `json:"endpoint"`
		PathStyle bool   `json:"path_style"`
	} `json:"s3"`
	SegmentRecords  int    `json:"segment_records"`
	SegmentInterval string `json:"segment_interval"`
	// Instance puts the archive under PREFIX/APP/INSTANCE/ (default
	// approvals.instance, else, in a fleet, the host name).
	Instance string `json:"instance"`
}

// proxyConfig reads the proxy's UAPK_CONFIG file from its ConfigMap.
func proxyConfig(objs *objects, proxy *corev1.Container, vols map[string]*corev1.Volume, env map[string]string) (*configFile, []string) {
	path := env["UAPK_CONFIG"]
	if path == "" {
		return nil, []string{"proxy: no UAPK_CONFIG: without the config file's upstream_auth the proxy holds no ERP credential"}
	}
	data, err := configMapFile(objs, proxy, vols, path)
	if err != nil {
		return nil, []string{"UAPK_CONFIG: " + err.Error()}
	}
	cfg, err := parseConfig([]byte(data))
	if err != nil {
		return nil, []string{"UAPK_CONFIG " + path + ": " + err.Error()}
	}
	var ps []string
	for key := range cfg.flags {
		if name := "UAPK_" + strings.ToUpper(key); env[name] != "" {
			ps = append(ps, fmt.Sprintf("UAPK_CONFIG %s: %s is also set by %s, which wins: the file's value is never used", path, key, name))
		}
	}
	return cfg, ps
}

// parseConfig decodes a config file: every key a serve flag with
// underscores and a scalar value, or a section decoded strictly.
func parseConfig(data []byte) (*configFile, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(j, &doc); err != nil {
		return nil, err
	}
	cfg := &configFile{flags: map[string]string{}}
	var problems []string
	for _, key := range keys(doc) {
		raw := doc[key]
		var dst any
		switch key {
		case "upstream_auth":
			cfg.UpstreamAuth = &upstreamAuth{}
			dst = cfg.UpstreamAuth
		case "identity":
			dst = &identityConfig{}
		case "archive":
			cfg.Archive = &archiveConfig{}
			dst = cfg.Archive
		case "approvals":
			cfg.Approvals = &approvalsConfig{}
			dst = cfg.Approvals
		case "ui":
			cfg.UI = &uiConfig{}
			dst = cfg.UI
		default:
			if key == "config" || !slices.Contains(serveEnv, "UAPK_"+strings.ToUpper(key)) {
				problems = append(problems, key+": not a serve flag or a section")
				continue
			}
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				problems = append(problems, key+": "+err.Error())
				continue
			}
			switch v.(type) {
			case map[string]any, []any, nil:
				problems = append(problems, key+": want one scalar value")
			default:
				cfg.flags[key] = fmt.Sprint(v)
			}
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(dst); err != nil {
			problems = append(problems, key+": "+err.Error())
		}
	}
	if a := cfg.Approvals; a != nil {
		problems = append(problems, approvalsProblems(a)...)
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return cfg, nil
}

// approvalsProblems applies the proxy's (and the hub's) checks of the
// approvals: section: a postgres:// URL with a host, and no instance
// without it.
func approvalsProblems(a *approvalsConfig) []string {
	var ps []string
	if a.Postgres != "" {
		u, err := url.Parse(a.Postgres)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			ps = append(ps, "approvals.postgres: want postgres://USER@HOST:PORT/DB")
		}
	}
	if a.Instance != "" && a.Postgres == "" {
		ps = append(ps, "approvals.instance needs approvals.postgres")
	}
	return ps
}

// upstreamAuthProblems wants an upstream_auth section whose files are in the
// ERP Secret as the proxy mounts it.
func upstreamAuthProblems(proxy *corev1.Container, vols map[string]*corev1.Volume, ua *upstreamAuth) []string {
	if ua == nil {
		return []string{"the config file has no upstream_auth: the ERP credential would have to be in the agent"}
	}
	var ps []string
	switch {
	case ua.OAuth2 != nil && (ua.Header != "" || ua.ValueFile != ""):
		ps = append(ps, "upstream_auth: either header and value_file, or oauth2")
	case ua.OAuth2 != nil:
		o := ua.OAuth2
		if !strings.HasPrefix(o.TokenURL, "https://") {
			ps = append(ps, fmt.Sprintf("upstream_auth.oauth2.token_url %q: want https", o.TokenURL))
		}
		if o.ClientID == "" {
			ps = append(ps, "upstream_auth.oauth2.client_id is required")
		}
		ps = append(ps, secretFileProblems(proxy, vols, "upstream_auth.oauth2.client_secret_file", o.ClientSecretFile)...)
	default:
		if ua.Header == "" {
			ps = append(ps, "upstream_auth.header is required")
		}
		ps = append(ps, secretFileProblems(proxy, vols, "upstream_auth.value_file", ua.ValueFile)...)
	}
	return ps
}

// secretFileProblems wants path, read by the proxy, to be a key of the ERP
// Secret in a read-only directory mount: a subPath mount is never updated,
// so a rotated credential would not be seen.
func secretFileProblems(proxy *corev1.Container, vols map[string]*corev1.Volume, what, path string) []string {
	return secretKeyProblems(proxy, vols, erpSecret, what, path)
}

// secretKeyProblems wants path, read by container c, to be a key of the
// Secret secret in a read-only directory mount, not optional, with no
// access for others.
func secretKeyProblems(c *corev1.Container, vols map[string]*corev1.Volume, secret, what, path string) []string {
	proxy := c
	if path == "" {
		return []string{what + " is required"}
	}
	var m *corev1.VolumeMount
	for i := range proxy.VolumeMounts {
		mp := proxy.VolumeMounts[i].MountPath
		if (path == mp || strings.HasPrefix(path, mp+"/")) && (m == nil || len(mp) > len(m.MountPath)) {
			m = &proxy.VolumeMounts[i]
		}
	}
	if m == nil {
		return []string{fmt.Sprintf("%s %s: not in a volume mount of the %s container", what, path, c.Name)}
	}
	v := vols[m.Name]
	if v == nil || v.Secret == nil || v.Secret.SecretName != secret {
		return []string{fmt.Sprintf("%s %s: volume %s is not the Secret %s", what, path, m.Name, secret)}
	}
	var ps []string
	if m.SubPath != "" || m.SubPathExpr != "" {
		ps = append(ps, fmt.Sprintf("%s %s: mounted with subPath, which the kubelet never updates: a rotated Secret would not be seen", what, path))
	}
	if !m.ReadOnly {
		ps = append(ps, fmt.Sprintf("%s %s: mount %s must be read-only", what, path, m.Name))
	}
	if s := v.Secret; s.DefaultMode == nil || *s.DefaultMode&0o007 != 0 {
		ps = append(ps, fmt.Sprintf("volume %s: defaultMode must leave others no access (0440 with the pod's fsGroup)", v.Name))
	}
	if o := v.Secret.Optional; o != nil && *o {
		ps = append(ps, fmt.Sprintf("volume %s: Secret %s is optional: the %s container would start without it and exit 2", v.Name, secret, c.Name))
	}
	if m.SubPath == "" && m.SubPathExpr == "" {
		rel := strings.TrimPrefix(path, m.MountPath+"/")
		ok := rel != path && !strings.Contains(rel, "/")
		if len(v.Secret.Items) > 0 {
			ok = slices.ContainsFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Path == rel })
		}
		if !ok {
			ps = append(ps, fmt.Sprintf("%s %s: not a key of the Secret %s mounted at %s", what, path, secret, m.MountPath))
		}
	}
	return ps
}

// adminTokenProblems wants the admin tokens file (hashes only) from a
// ConfigMap: without it the proxy writes an all-scope token into the data
// directory.
func adminTokenProblems(objs *objects, proxy *corev1.Container, vols map[string]*corev1.Volume, env map[string]string, cfg *configFile) []string {
	path := env["UAPK_ADMIN_TOKENS"]
	if path == "" && cfg != nil {
		path = cfg.flags["admin_tokens"]
	}
	if path == "" {
		return []string{"proxy: no UAPK_ADMIN_TOKENS (or admin_tokens): the proxy would write an all-scope DATA/admin.token into the data volume"}
	}
	data, err := configMapFile(objs, proxy, vols, path)
	if err != nil {
		return []string{"UAPK_ADMIN_TOKENS: " + err.Error()}
	}
	return tokensFileProblems(path, []byte(data))
}

// tokensFileProblems checks an admin tokens file as the proxy reads it
// (docs/reference.md#admin-tokens): strictly, hashes of 64 lower-case hex
// digits, known scopes, nothing listed twice; and someone can deliver a
// signed decision.
func tokensFileProblems(path string, data []byte) []string {
	var f struct {
		Tokens []struct {
			Name   string   `json:"name"`
			SHA256 string   `json:"sha256"`
			Scopes []string `json:"scopes"`
		} `json:"tokens"`
	}
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return []string{fmt.Sprintf("admin tokens %s: %v", path, err)}
	}
	var ps []string
	names, sums := map[string]bool{}, map[string]bool{}
	var decide bool
	for i, tok := range f.Tokens {
		bad := func(format string, args ...any) {
			ps = append(ps, fmt.Sprintf("admin tokens %s: tokens[%d]: %s", path, i, fmt.Sprintf(format, args...)))
		}
		if tok.Name == "" || names[tok.Name] {
			bad("name %q missing or listed twice", tok.Name)
		}
		names[tok.Name] = true
		if b, err := hex.DecodeString(tok.SHA256); err != nil || len(b) != 32 || tok.SHA256 != strings.ToLower(tok.SHA256) {
			bad("sha256 must be 64 lower-case hex digits")
		} else if sums[tok.SHA256] {
			bad("sha256 listed twice")
		}
		sums[tok.SHA256] = true
		if len(tok.Scopes) == 0 {
			bad("no scopes")
		}
		for _, sc := range tok.Scopes {
			if !slices.Contains([]string{"read", "decide", "override", "evidence"}, sc) {
				bad("unknown scope %q", sc)
			}
		}
		decide = decide || slices.Contains(tok.Scopes, "decide") && slices.Contains(tok.Scopes, "read")
	}
	if !decide {
		ps = append(ps, fmt.Sprintf("admin tokens %s: no token with scopes read and decide: nobody could deliver an approval", path))
	}
	return ps
}

// secretRef is one way a container reads a Secret.
type secretRef struct{ secret, via string }

// secretRefs lists every Secret c reads: env, envFrom, and mounted Secret
// or projected volumes.
func secretRefs(c *corev1.Container, vols map[string]*corev1.Volume) []secretRef {
	var refs []secretRef
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			refs = append(refs, secretRef{e.ValueFrom.SecretKeyRef.Name, "env " + e.Name})
		}
	}
	for _, e := range c.EnvFrom {
		if e.SecretRef != nil {
			refs = append(refs, secretRef{e.SecretRef.Name, "envFrom"})
		}
	}
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		switch {
		case v == nil:
		case v.Secret != nil:
			refs = append(refs, secretRef{v.Secret.SecretName, "volume " + v.Name})
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					refs = append(refs, secretRef{src.Secret.Name, "projected volume " + v.Name})
				}
			}
		}
	}
	return refs
}

// outsiderProblems checks a container other than the proxy: it holds no
// admin token and no ERP credential, and cannot read the data volume
// (ledger.db, gateway.key, and DATA/admin.token when no tokens file is set).
func outsiderProblems(c *corev1.Container, vols map[string]*corev1.Volume, data string) []string {
	var ps []string
	for _, e := range c.Env {
		name := strings.ToUpper(e.Name)
		switch {
		case name == "UAPK_ADMIN_TOKEN" || name == "UAPK_ADMIN_TOKENS":
			ps = append(ps, fmt.Sprintf("container %s: env %s: the agent's pod holds no admin token", c.Name, e.Name))
		case name == "UAPK_ADMIN":
			ps = append(ps, fmt.Sprintf("container %s: env %s: the admin API refuses a caller without a token (401), so polling it waits forever; retry with X-UAPK-Approval-Id", c.Name, e.Name))
		case strings.HasPrefix(e.Value, "Bearer ") || strings.HasPrefix(e.Value, "Basic "):
			ps = append(ps, fmt.Sprintf("container %s: env %s holds a credential; the ERP's is the proxy's alone", c.Name, e.Name))
		case strings.Contains(name, "ERP") && containsAny(name, "TOKEN", "SECRET", "PASSWORD", "AUTH", "KEY", "CREDENTIAL"):
			ps = append(ps, fmt.Sprintf("container %s: env %s looks like an ERP credential; the proxy holds it (upstream_auth)", c.Name, e.Name))
		}
	}
	for _, m := range c.VolumeMounts {
		v := vols[m.Name]
		switch {
		case v == nil:
		case v.Name == data:
			ps = append(ps, fmt.Sprintf("container %s mounts the proxy's data volume %s: ledger.db, gateway.key and any admin.token would be readable", c.Name, v.Name))
		case v.PersistentVolumeClaim != nil:
			ps = append(ps, fmt.Sprintf("container %s mounts claim %s", c.Name, v.PersistentVolumeClaim.ClaimName))
		}
	}
	return ps
}

// probeProblems: the kubelet sends no token, so a probe may only ask for
// the admin API's unauthenticated /livez and /readyz, and must not carry an
// Authorization header (a token in a pod spec is readable by whoever can
// read the pod).
func probeProblems(c *corev1.Container) []string {
	var ps []string
	check := func(what string, g *corev1.HTTPGetAction) {
		if g == nil {
			return
		}
		if g.Path != "/livez" && g.Path != "/readyz" {
			ps = append(ps, fmt.Sprintf("container %s: %s: path %q: only /livez and /readyz answer without a token", c.Name, what, g.Path))
		}
		for _, h := range g.HTTPHeaders {
			if strings.EqualFold(h.Name, "Authorization") {
				ps = append(ps, fmt.Sprintf("container %s: %s sends an Authorization header", c.Name, what))
			}
		}
	}
	for what, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p != nil {
			check(what, p.HTTPGet)
		}
	}
	if l := c.Lifecycle; l != nil {
		for what, h := range map[string]*corev1.LifecycleHandler{"postStart": l.PostStart, "preStop": l.PreStop} {
			if h != nil {
				check(what, h.HTTPGet)
			}
		}
	}
	slices.Sort(ps)
	return ps
}

func containsAny(s string, subs ...string) bool {
	return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
}

// TestAccessProblems shows that accessProblems catches each way the ERP
// credential, an admin token or the data volume could reach the agent, and
// each probe that would need a token: every case breaks one built
// kustomization one way and wants the problem named.
func TestAccessProblems(t *testing.T) {
	const (
		base       = "sidecar/base"
		persistent = "sidecar/overlays/persistent"
		forward    = "sidecar/overlays/http-proxy"
	)
	secretEnv := func(name, secret string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "authorization"}}}
	}
	agent := func(p *corev1.PodSpec) *corev1.Container { return container(p.Containers, agentContainer) }
	proxy := func(p *corev1.PodSpec) *corev1.Container { return container(p.InitContainers, proxyContainer) }
	mount := func(c *corev1.Container, vol string) *corev1.VolumeMount {
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].Name == vol {
				return &c.VolumeMounts[i]
			}
		}
		t.Fatalf("container %s does not mount %s", c.Name, vol)
		return nil
	}
	volume := func(p *corev1.PodSpec, name string) *corev1.Volume {
		for i := range p.Volumes {
			if p.Volumes[i].Name == name {
				return &p.Volumes[i]
			}
		}
		t.Fatalf("no volume %s", name)
		return nil
	}
	dropEnv := func(c *corev1.Container, name string) {
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
	}
	setConfigMap := func(o *objects, prefix, key, data string) {
		for name, cm := range o.configMaps {
			if strings.HasPrefix(name, prefix) {
				cm.Data[key] = data
				return
			}
		}
		t.Fatalf("no ConfigMap %s*", prefix)
	}
	tokens := string(readFile(t, baseAdminTokens))

	for _, tc := range []struct {
		name   string
		dir    string
		job    bool // break the Job's pod instead of the Deployment's
		mutate func(o *objects, p *corev1.PodSpec)
		want   string
	}{
		// The ERP credential reaches a container other than the proxy.
		{"ERP Secret in the agent's env", base, false, func(o *objects, p *corev1.PodSpec) {
			agent(p).Env = append(agent(p).Env, secretEnv("ERP_AUTHORIZATION", erpSecret))
		}, "container agent reads the ERP credential, Secret uapk-proxy-erp (env ERP_AUTHORIZATION)"},
		{"ERP Secret as the agent's envFrom", forward, true, func(o *objects, p *corev1.PodSpec) {
			agent(p).EnvFrom = append(agent(p).EnvFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: erpSecret}}})
		}, "container agent reads the ERP credential, Secret uapk-proxy-erp (envFrom)"},
		{"ERP Secret volume mounted by the agent", base, true, func(o *objects, p *corev1.PodSpec) {
			agent(p).VolumeMounts = append(agent(p).VolumeMounts, corev1.VolumeMount{Name: "erp-credential", MountPath: "/erp", ReadOnly: true})
		}, "container agent reads the ERP credential, Secret uapk-proxy-erp (volume erp-credential)"},
		{"ERP Secret in a projected volume of the agent", persistent, false, func(o *objects, p *corev1.PodSpec) {
			p.Volumes = append(p.Volumes, corev1.Volume{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: erpSecret}}}}}}})
			agent(p).VolumeMounts = append(agent(p).VolumeMounts, corev1.VolumeMount{Name: "all", MountPath: "/all", ReadOnly: true})
		}, "container agent reads the ERP credential, Secret uapk-proxy-erp (projected volume all)"},
		{"ERP Secret in another init container", base, false, func(o *objects, p *corev1.PodSpec) {
			p.InitContainers = append(p.InitContainers, corev1.Container{Name: "fetch", Env: []corev1.EnvVar{secretEnv("TOKEN", erpSecret)}})
		}, "container fetch reads the ERP credential"},
		{"ERP credential as a literal in the agent's env", base, false, func(o *objects, p *corev1.PodSpec) {
			agent(p).Env = append(agent(p).Env, corev1.EnvVar{Name: "ERP_HEADERS", Value: "Bearer eyJ..."})
		}, "container agent: env ERP_HEADERS holds a credential"},
		{"ERP API key named in the agent's env", base, false, func(o *objects, p *corev1.PodSpec) {
			agent(p).Env = append(agent(p).Env, corev1.EnvVar{Name: "ERP_API_KEY", Value: "k"})
		}, "container agent: env ERP_API_KEY looks like an ERP credential"},

		// The proxy does not get its credential through upstream_auth, or
		// would not see a rotation.
		{"no UAPK_CONFIG", base, false, func(o *objects, p *corev1.PodSpec) { dropEnv(proxy(p), "UAPK_CONFIG") }, "proxy: no UAPK_CONFIG"},
		{"config without upstream_auth", persistent, true, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-config-", "config.yaml", "archive:\n  segment_records: 100\n")
		}, "the config file has no upstream_auth"},
		{"config mounted from elsewhere", base, false, func(o *objects, p *corev1.PodSpec) {
			volume(p, "config").ConfigMap.Name = "someone-elses"
		}, "UAPK_CONFIG: /etc/uapk-proxy/config/config.yaml: ConfigMap someone-elses is not in the build"},
		{"value_file outside the ERP Secret", base, false, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-config-", "config.yaml", "upstream_auth:\n  header: Authorization\n  value_file: /etc/uapk-proxy/config/authorization\n")
		}, "upstream_auth.value_file /etc/uapk-proxy/config/authorization: volume config is not the Secret uapk-proxy-erp"},
		{"value_file not a key of the mount", base, false, func(o *objects, p *corev1.PodSpec) {
			volume(p, "erp-credential").Secret.Items = []corev1.KeyToPath{{Key: "token", Path: "token"}}
		}, "upstream_auth.value_file /var/run/secrets/erp/authorization: not a key of the Secret"},
		{"oauth2 secret outside the ERP Secret", base, false, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-config-", "config.yaml", "upstream_auth:\n  oauth2:\n    token_url: https://login.example/token\n    client_id: c\n    client_secret_file: /tmp/secret\n")
		}, "upstream_auth.oauth2.client_secret_file /tmp/secret: volume proxy-tmp is not the Secret uapk-proxy-erp"},
		{"unknown key in upstream_auth", base, false, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-config-", "config.yaml", "upstream_auth:\n  header: Authorization\n  value: Bearer x\n")
		}, `upstream_auth: json: unknown field "value"`},
		{"config key that the env overrides", base, false, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-config-", "config.yaml", string(readFile(t, baseConfig))+"log_level: debug\n")
		}, "log_level is also set by UAPK_LOG_LEVEL"},
		{"ERP Secret through subPath", base, false, func(o *objects, p *corev1.PodSpec) {
			m := mount(proxy(p), "erp-credential")
			m.MountPath, m.SubPath = "/var/run/secrets/erp/authorization", "authorization"
		}, "mounted with subPath"},
		{"ERP Secret mounted read-write", base, true, func(o *objects, p *corev1.PodSpec) {
			mount(proxy(p), "erp-credential").ReadOnly = false
		}, "mount erp-credential must be read-only"},
		{"ERP Secret readable by others", base, false, func(o *objects, p *corev1.PodSpec) {
			volume(p, "erp-credential").Secret.DefaultMode = nil
		}, "volume erp-credential: defaultMode must leave others no access"},
		{"ERP Secret optional", base, false, func(o *objects, p *corev1.PodSpec) {
			optional := true
			volume(p, "erp-credential").Secret.Optional = &optional
		}, "Secret uapk-proxy-erp is optional"},

		// The admin tokens file is not wired, or not one the proxy reads.
		{"no UAPK_ADMIN_TOKENS", persistent, false, func(o *objects, p *corev1.PodSpec) { dropEnv(proxy(p), "UAPK_ADMIN_TOKENS") }, "proxy: no UAPK_ADMIN_TOKENS"},
		{"admin tokens not mounted", base, true, func(o *objects, p *corev1.PodSpec) {
			proxy(p).VolumeMounts = slices.DeleteFunc(proxy(p).VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "admin-tokens" })
		}, "UAPK_ADMIN_TOKENS: /etc/uapk-proxy/admin-tokens/admin-tokens.yaml: no volume mounted"},
		{"a token in the tokens file", base, false, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-admin-tokens-", "admin-tokens.yaml", tokens+"  - name: x\n    token: uapk_abc\n    scopes: [read]\n")
		}, `unknown field "token"`},
		{"a hash in upper case", base, false, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-admin-tokens-", "admin-tokens.yaml", strings.Replace(tokens, "bea4822494b8", "BEA4822494B8", 1))
		}, "tokens[0]: sha256 must be 64 lower-case hex digits"},
		{"no token can deliver a decision", base, false, func(o *objects, p *corev1.PodSpec) {
			setConfigMap(o, "uapk-proxy-admin-tokens-", "admin-tokens.yaml", strings.Replace(tokens, "[read, decide]", "[read]", 1))
		}, "no token with scopes read and decide"},

		// The agent reaches an admin token or the data volume.
		{"agent mounts the data volume", base, false, func(o *objects, p *corev1.PodSpec) {
			agent(p).VolumeMounts = append(agent(p).VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/data", ReadOnly: true})
		}, "container agent mounts the proxy's data volume data"},
		{"agent mounts the ledger's claim", persistent, true, func(o *objects, p *corev1.PodSpec) {
			agent(p).VolumeMounts = append(agent(p).VolumeMounts, corev1.VolumeMount{Name: "data", MountPath: "/data", ReadOnly: true})
		}, "container agent mounts the proxy's data volume data"},
		{"agent gets the approver token", base, false, func(o *objects, p *corev1.PodSpec) {
			agent(p).Env = append(agent(p).Env, secretEnv("UAPK_ADMIN_TOKEN", adminTokenSecret))
		}, "container agent: env UAPK_ADMIN_TOKEN: the agent's pod holds no admin token"},
		{"agent mounts the approver token Secret", forward, false, func(o *objects, p *corev1.PodSpec) {
			p.Volumes = append(p.Volumes, corev1.Volume{Name: "tok", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: adminTokenSecret}}})
			agent(p).VolumeMounts = append(agent(p).VolumeMounts, corev1.VolumeMount{Name: "tok", MountPath: "/tok", ReadOnly: true})
		}, "container agent reads Secret uapk-proxy-admin-token (volume tok)"},
		{"proxy reads the approver token Secret", base, false, func(o *objects, p *corev1.PodSpec) {
			proxy(p).Env = append(proxy(p).Env, secretEnv("ADMIN", adminTokenSecret))
		}, "container uapk-proxy reads Secret uapk-proxy-admin-token (env ADMIN)"},
		{"agent polls the admin API", base, true, func(o *objects, p *corev1.PodSpec) {
			agent(p).Env = append(agent(p).Env, corev1.EnvVar{Name: "UAPK_ADMIN", Value: "http://127.0.0.1:8090"})
		}, "container agent: env UAPK_ADMIN: the admin API refuses"},

		{"a shared process namespace", base, true, func(o *objects, p *corev1.PodSpec) {
			share := true
			p.ShareProcessNamespace = &share
		}, "shareProcessNamespace"},

		// Probes that need a token, or carry one.
		{"probe with an Authorization header", base, false, func(o *objects, p *corev1.PodSpec) {
			g := proxy(p).ReadinessProbe.HTTPGet
			g.HTTPHeaders = append(g.HTTPHeaders, corev1.HTTPHeader{Name: "authorization", Value: "Bearer x"})
		}, "container uapk-proxy: readinessProbe sends an Authorization header"},
		{"probe on an admin endpoint", persistent, false, func(o *objects, p *corev1.PodSpec) {
			proxy(p).LivenessProbe.HTTPGet.Path = "/v1/ledger/head"
		}, `container uapk-proxy: livenessProbe: path "/v1/ledger/head"`},
		{"agent probe on the admin API", base, true, func(o *objects, p *corev1.PodSpec) {
			agent(p).ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/v1/approvals", Port: intstr.FromInt32(8090)}}}
		}, `container agent: readinessProbe: path "/v1/approvals"`},
		{"preStop hook on an admin endpoint", base, false, func(o *objects, p *corev1.PodSpec) {
			agent(p).Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/v1/evidence", Port: intstr.FromInt32(8090)}}}
		}, `container agent: preStop: path "/v1/evidence"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := build(t, tc.dir)
			pod := &objs.deployments[0].Spec.Template.Spec
			if tc.job {
				pod = &objs.jobs[0].Spec.Template.Spec
			}
			if ps := accessProblems(objs, pod); len(ps) != 0 {
				t.Fatalf("problems before breaking it: %q", ps)
			}
			tc.mutate(objs, pod)
			ps := accessProblems(objs, pod)
			if !slices.ContainsFunc(ps, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("want a problem containing %q, got %q", tc.want, ps)
			}
		})
	}
}

// TestConfigExamples keeps the commented-out sections of base/config.yaml
// (the oauth2 alternative, identity, archive) decodable as the proxy reads
// them, and the oauth2 client secret in the ERP Secret as the proxy mounts
// it: uncommenting one must be all it takes.
func TestConfigExamples(t *testing.T) {
	var example []string
	var in bool
	for _, line := range strings.Split(string(readFile(t, baseConfig)), "\n") {
		if strings.HasPrefix(line, "# upstream_auth:") || strings.HasPrefix(line, "# identity:") || strings.HasPrefix(line, "# archive:") {
			in = true
		}
		if !in || !strings.HasPrefix(line, "#") {
			in = false
			continue
		}
		example = append(example, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
	}
	cfg, err := parseConfig([]byte(strings.Join(example, "\n")))
	if err != nil {
		t.Fatalf("the commented examples:\n%s\n%v", strings.Join(example, "\n"), err)
	}
	if cfg.UpstreamAuth == nil || cfg.UpstreamAuth.OAuth2 == nil {
		t.Fatal("no commented oauth2 alternative")
	}
	objs := build(t, "sidecar/base")
	for _, w := range objs.workloads() {
		proxy := container(w.pod.InitContainers, proxyContainer)
		vols := volumeMap(w.pod)
		for _, p := range upstreamAuthProblems(proxy, vols, cfg.UpstreamAuth) {
			t.Errorf("%s: the oauth2 example: %s", w.id, p)
		}
	}
}

func TestManifestCopyEqualsTheExample(t *testing.T) {
	if !bytes.Equal(readFile(t, copiedManifest), readFile(t, exampleManifest)) {
		t.Fatalf("%s differs from %s; run: cp %s deploy/%s", copiedManifest, exampleManifest,
			strings.TrimPrefix(exampleManifest, "../"), copiedManifest)
	}
}

// TestPrincipals checks the placeholder approvers: Ed25519 public keys in
// PKIX PEM as the proxy reads them (docs/reference.md#approval-statement-and-rules), and someone who can sign
// for every role the manifest may ask for.
func TestPrincipals(t *testing.T) {
	var file struct {
		Principals []struct {
			ID        string   `json:"id"`
			Roles     []string `json:"roles"`
			PublicKey string   `json:"public_key"`
		} `json:"principals"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, basePrincipals), &file); err != nil {
		t.Fatal(err)
	}
	signers := map[string]bool{}
	seen := map[string]string{}
	for _, p := range file.Principals {
		if p.PublicKey == "" {
			continue
		}
		block, rest := pem.Decode([]byte(p.PublicKey))
		if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			t.Errorf("%s: public_key is not exactly one PUBLIC KEY PEM block", p.ID)
			continue
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			t.Errorf("%s: %v", p.ID, err)
			continue
		}
		ed, ok := key.(ed25519.PublicKey)
		if !ok {
			t.Errorf("%s: %T, want Ed25519", p.ID, key)
			continue
		}
		if other, dup := seen[string(ed)]; dup {
			t.Errorf("%s and %s share a public key", p.ID, other)
		}
		seen[string(ed)] = p.ID
		if bytes.Count(ed, []byte{0}) > 8 {
			t.Errorf("%s: a made-up key; use one from keygen", p.ID)
		}
		for _, r := range p.Roles {
			signers[r] = true
		}
	}
	for _, role := range manifestRoles(t) {
		if !signers[role] {
			t.Errorf("role %s is required by the manifest but no principal with a key holds it", role)
		}
	}
}

// manifestRoles lists every role the example manifest can require.
func manifestRoles(t *testing.T) []string {
	t.Helper()
	var m struct {
		Actions map[string]struct {
			RolesRequired []string `json:"roles_required"`
			Escalation    *struct {
				RolesRequired []string `json:"roles_required"`
			} `json:"escalation"`
		} `json:"actions"`
		Override *struct {
			RolesRequired []string `json:"roles_required"`
		} `json:"override"`
	}
	if err := json.Unmarshal(readFile(t, exampleManifest), &m); err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, a := range m.Actions {
		roles = append(roles, a.RolesRequired...)
		if a.Escalation != nil {
			roles = append(roles, a.Escalation.RolesRequired...)
		}
	}
	if m.Override != nil {
		roles = append(roles, m.Override.RolesRequired...)
	}
	roles = append(roles, "cfo") // the default escalation (docs/reference.md#manifest)
	slices.Sort(roles)
	return slices.Compact(roles)
}

// TestStrictDecodingRejectsTypos makes sure the strictness above is real:
// a misspelt field must fail, not be dropped.
func TestStrictDecodingRejectsTypos(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"unknown field", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      initContainers:
        - name: uapk-proxy
          image: x:1
          restartPolcy: Always
      containers: [{name: agent, image: y:1}]
`},
		{"duplicate field", `
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data: {a: "1"}
data: {b: "2"}
`},
		{"unknown kind", `
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: x}
`},
		{"wrong type", `
apiVersion: batch/v1
kind: Job
metadata: {name: x}
spec: {backoffLimit: "one"}
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeStrict([]byte(tc.doc)); err == nil {
				t.Fatal("decoded without error")
			}
		})
	}
}

// TestEveryFileIsBuilt fails on a YAML or JSON file under sidecar/ or fleet/ that no
// kustomization uses: it would never be checked, and users would apply a
// file nobody tested.
func TestEveryFileIsBuilt(t *testing.T) {
	used := map[string]bool{}
	var files []string
	walk := func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		if filepath.Base(path) != "kustomization.yaml" {
			files = append(files, path)
			return nil
		}
		var k types.Kustomization
		if err := yaml.UnmarshalStrict(readFile(t, path), &k); err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		dir := filepath.Dir(path)
		mark := func(p string) { used[filepath.Join(dir, p)] = true }
		for _, r := range k.Resources {
			mark(r)
		}
		for _, p := range k.Patches {
			if p.Path != "" {
				mark(p.Path)
			}
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.FileSources {
				_, p, ok := strings.Cut(f, "=")
				if !ok {
					p = f
				}
				mark(p)
			}
		}
		return nil
	}
	for _, dir := range []string{sidecarDir, fleetDir} {
		if err := filepath.WalkDir(dir, walk); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		if !used[f] {
			t.Errorf("%s is used by no kustomization", f)
		}
	}
}

// TestDockerfile checks what the image must be, since no Docker engine runs
// where these tests do.
func TestDockerfile(t *testing.T) {
	df := string(readFile(t, "../Dockerfile"))
	var froms, instructions []string
	for _, line := range strings.Split(df, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instructions = append(instructions, line)
		if strings.HasPrefix(line, "FROM ") {
			froms = append(froms, strings.Fields(line)[1])
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:1.26") ||
		froms[1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("stages %v: want golang:1.26 then gcr.io/distroless/static-debian12:nonroot", froms)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/uapk-proxy", "USER 65532:65532",
		`ENTRYPOINT ["/uapk-proxy"]`, `CMD ["serve"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if last := instructions[len(instructions)-1]; last != `CMD ["serve"]` {
		t.Errorf("last instruction %q", last)
	}
	ignore := string(readFile(t, "../.dockerignore"))
	for _, want := range []string{"examples/keys/", "**/*.key", ".git", "data/"} {
		if !slices.Contains(strings.Split(ignore, "\n"), want) {
			t.Errorf(".dockerignore lacks %q (keys and ledgers must stay out of the build context)", want)
		}
	}
}

// Helpers.

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

// envMap gives each variable's literal value ("" for valueFrom) and fails
// on a name set twice: the last one would win without anyone noticing.
func envMap(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, e := range c.Env {
		if _, dup := m[e.Name]; dup {
			t.Errorf("container %s: env %s set twice", c.Name, e.Name)
		}
		m[e.Name] = e.Value
	}
	return m
}

func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return host, p
}

func hostOf(t *testing.T, addr string) string {
	t.Helper()
	h, _ := splitAddr(t, addr)
	return h
}

func resolvePort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	t.Errorf("container %s: no port named %q", c.Name, p.StrVal)
	return 0
}

// volumeMap is the pod's volumes by name.
func volumeMap(pod *corev1.PodSpec) map[string]*corev1.Volume {
	vols := map[string]*corev1.Volume{}
	for i := range pod.Volumes {
		vols[pod.Volumes[i].Name] = &pod.Volumes[i]
	}
	return vols
}

// mountAt is the container's mount whose path is exactly path.
func mountAt(c *corev1.Container, path string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// fileFromConfigMap resolves path, read by container c, to the content of a
// ConfigMap key in the build, and returns it.
func fileFromConfigMap(t *testing.T, objs *objects, c *corev1.Container, vols map[string]*corev1.Volume, path string) string {
	t.Helper()
	data, err := configMapFile(objs, c, vols, path)
	if err != nil {
		t.Error(err)
	}
	return data
}

// configMapFile resolves path, read by container c, to the content of a
// ConfigMap key in the build, mounted read-only.
func configMapFile(objs *objects, c *corev1.Container, vols map[string]*corev1.Volume, path string) (string, error) {
	dir, file := filepath.Split(path)
	m := mountAt(c, filepath.Clean(dir))
	if m == nil {
		return "", fmt.Errorf("%s: no volume mounted at %s", path, dir)
	}
	if !m.ReadOnly {
		return "", fmt.Errorf("%s: configuration mounted read-write", path)
	}
	v := vols[m.Name]
	if v == nil || v.ConfigMap == nil {
		return "", fmt.Errorf("%s: volume %s is not a ConfigMap", path, m.Name)
	}
	cm := objs.configMaps[v.ConfigMap.Name]
	if cm == nil {
		return "", fmt.Errorf("%s: ConfigMap %s is not in the build", path, v.ConfigMap.Name)
	}
	data, ok := cm.Data[file]
	if !ok {
		return "", fmt.Errorf("%s: ConfigMap %s has no key %s", path, cm.Name, file)
	}
	return data, nil
}
