package deploy

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net"
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

	proxyContainer = "uapk-proxy"
	agentContainer = "agent"
	proxyUID       = 65532
	upstream       = "https://erp.internal.example.com"
	caSecret       = "uapk-proxy-ca"
	s3Secret       = "uapk-proxy-s3"
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
	objs := &objects{configMaps: map[string]*corev1.ConfigMap{}, claims: map[string]*corev1.PersistentVolumeClaim{}}
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
			if len(objs.deployments) != 1 || len(objs.jobs) != 1 || len(objs.netpols) != 1 {
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
			checkNetworkPolicy(t, objs.netpols[0], objs.workloads())
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
	example := readFile(t, exampleManifest)
	principals := readFile(t, basePrincipals)
	var found int
	for name, cm := range objs.configMaps {
		switch {
		case strings.HasPrefix(name, "uapk-proxy-manifest-"):
			found++
			if got := cm.Data["sox-financial.json"]; got != string(example) {
				t.Errorf("ConfigMap %s: sox-financial.json differs from %s", name, exampleManifest)
			}
		case strings.HasPrefix(name, "uapk-proxy-principals-"):
			found++
			if got := cm.Data["principals.yaml"]; got != string(principals) {
				t.Errorf("ConfigMap %s: principals.yaml differs from %s", name, basePrincipals)
			}
		default:
			t.Errorf("unexpected ConfigMap %s", name)
		}
		if cm.Namespace != "" {
			t.Errorf("ConfigMap %s: namespace %q set; leave it to kubectl -n", name, cm.Namespace)
		}
	}
	if found != 2 {
		t.Errorf("want the manifest and principals ConfigMaps (with hash suffixes), got %v", keys(objs.configMaps))
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
	vols := map[string]*corev1.Volume{}
	for i := range pod.Volumes {
		vols[pod.Volumes[i].Name] = &pod.Volumes[i]
	}
	manifest := fileFromConfigMap(t, objs, proxy, vols, env["UAPK_MANIFEST"])
	if manifest != string(readFile(t, exampleManifest)) {
		t.Errorf("UAPK_MANIFEST %s is not examples/manifests/sox-financial.json", env["UAPK_MANIFEST"])
	}
	fileFromConfigMap(t, objs, proxy, vols, env["UAPK_PRINCIPALS"])

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
			if v.Secret.SecretName != caSecret {
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

func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, ws []workload) {
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
			if p.Port == nil || (p.Port.IntValue() != 53 && p.Port.IntValue() != 443) {
				t.Errorf("egress rule %d: port %v, want 53 (DNS) or 443 (the ERP)", i, p.Port)
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

// TestEveryFileIsBuilt fails on a YAML or JSON file under sidecar/ that no
// kustomization uses: it would never be checked, and users would apply a
// file nobody tested.
func TestEveryFileIsBuilt(t *testing.T) {
	used := map[string]bool{}
	var files []string
	err := filepath.WalkDir(sidecarDir, func(path string, d fs.DirEntry, err error) error {
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
	})
	if err != nil {
		t.Fatal(err)
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
	dir, file := filepath.Split(path)
	m := mountAt(c, filepath.Clean(dir))
	if m == nil {
		t.Errorf("%s: no volume mounted at %s", path, dir)
		return ""
	}
	if !m.ReadOnly {
		t.Errorf("%s: configuration mounted read-write", path)
	}
	v := vols[m.Name]
	if v == nil || v.ConfigMap == nil {
		t.Errorf("%s: volume %s is not a ConfigMap", path, m.Name)
		return ""
	}
	cm := objs.configMaps[v.ConfigMap.Name]
	if cm == nil {
		t.Errorf("%s: ConfigMap %s is not in the build", path, v.ConfigMap.Name)
		return ""
	}
	data, ok := cm.Data[file]
	if !ok {
		t.Errorf("%s: ConfigMap %s has no key %s", path, cm.Name, file)
	}
	return data
}
