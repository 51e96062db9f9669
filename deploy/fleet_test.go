package deploy

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgpassfile"
	"github.com/jackc/pgx/v5/pgconn"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	fleetDir       = "fleet"
	fleetSecretDir = "fleet/postgres-secret"
	fleetConfig    = "sidecar/components/fleet/config.yaml"
	hubConfigFile  = "fleet/hub-config.yaml"

	hubName         = "uapk-hub" // the Deployment, its container and its Service
	sidecarWorkload = "financial-ai-assistant"
	pgPort          = 5432
)

// hubFlags are the flags of `uapk-proxy hub` (internal/cli/hub.go). Any
// other flag makes the hub exit; a serve flag (a door, a manifest, a data
// dir with a ledger) means nothing to it.
var hubFlags = []string{"config", "principals", "admin-addr", "admin-tokens", "data-dir", "wait", "shutdown-grace", "log-level"}

// hubRefused are the config sections the hub refuses (exit 2), with its
// reason.
var hubRefused = map[string]string{
	"archive":       "the hub keeps no ledger, so it archives nothing: each proxy archives its own",
	"notify":        "the hub sends no notifications: the proxy that records each change does",
	"upstream_auth": "the hub has no doors and reaches no ERP",
}

// pgFileParams are the connection parameters with which the PostgreSQL
// driver reads a file: each must be a key of the PostgreSQL Secret.
var pgFileParams = []string{"passfile", "sslrootcert", "sslcert", "sslkey", "servicefile"}

// TestFleet builds deploy/fleet and checks it: the sidecar workloads as in
// the base (every check of TestKustomizations' pods), and what a fleet
// adds (fleetProblems).
func TestFleet(t *testing.T) {
	objs := build(t, fleetDir)
	for _, p := range fleetProblems(objs) {
		t.Error(p)
	}

	// The generated ConfigMaps are the files in Git.
	want := map[string]struct{ key, file string }{
		"uapk-proxy-manifest-":     {"sox-financial.json", exampleManifest},
		"uapk-proxy-principals-":   {"principals.yaml", basePrincipals},
		"uapk-proxy-config-":       {"config.yaml", fleetConfig},
		"uapk-proxy-admin-tokens-": {"admin-tokens.yaml", baseAdminTokens},
		"uapk-hub-config-":         {"config.yaml", hubConfigFile},
	}
	found := map[string]bool{}
	for name, cm := range objs.configMaps {
		var ok bool
		for prefix, w := range want {
			if strings.HasPrefix(name, prefix) {
				ok, found[prefix] = true, true
				if cm.Data[w.key] != string(readFile(t, w.file)) {
					t.Errorf("ConfigMap %s: %s differs from %s", name, w.key, w.file)
				}
			}
		}
		if !ok {
			t.Errorf("unexpected ConfigMap %s", name)
		}
	}
	if len(found) != len(want) {
		t.Errorf("ConfigMaps %v: want one of each of %v", keys(objs.configMaps), keys(want))
	}

	var sidecars []workload
	for _, w := range objs.workloads() {
		if container(w.pod.InitContainers, proxyContainer) != nil {
			sidecars = append(sidecars, w)
		}
	}
	if len(sidecars) != 2 {
		t.Fatalf("want the base's two workloads with a sidecar, got %d", len(sidecars))
	}
	claims := map[string]string{}
	for _, w := range sidecars {
		t.Run(w.id, func(t *testing.T) { checkPod(t, objs, w, sidecarURL, false, claims) })
	}
	for _, np := range objs.netpols {
		if np.Name == sidecarWorkload {
			checkNetworkPolicy(t, np, sidecars, 53, 443, pgPort)
		}
	}

	hub := deployment(objs, hubName)
	if hub == nil {
		t.Fatalf("no Deployment %s", hubName)
	}
	pod := &hub.Spec.Template.Spec
	c := container(pod.Containers, hubName)
	if c == nil {
		t.Fatalf("Deployment %s: no container %s", hubName, hubName)
	}
	checkSecurityContext(t, c.Name, c.SecurityContext, true)
	checkResources(t, c)
	checkImage(t, c)
	if psc := pod.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("Deployment %s: pod seccompProfile must be RuntimeDefault", hubName)
	}
}

// fleetProblems checks what deploy/fleet adds to the sidecar: several
// proxies joined to one PostgreSQL, each an instance named by its pod, the
// password from a Secret only, and hubs that serve the fleet's admin API
// and desk with no doors, behind a Service, reaching only PostgreSQL. It
// returns the problems, so that TestFleetProblems can show each is caught.
func fleetProblems(objs *objects) []string {
	var ps []string
	bad := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }

	if len(objs.secrets) != 0 {
		bad("the fleet generates Secrets %v: re-applying it would reset them; %s is referenced, never generated", keys(objs.secrets), pgSecret)
	}
	for _, d := range objs.deployments {
		if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			bad("Deployment %s: selector does not match its pod template", d.Name)
		}
		if d.Namespace != "" {
			bad("Deployment %s: namespace set", d.Name)
		}
	}

	// The proxies.
	if d := deployment(objs, sidecarWorkload); d == nil {
		bad("no Deployment %s", sidecarWorkload)
	} else if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		bad("Deployment %s: replicas must be more than 1: a fleet of proxies", d.Name)
	}
	var sidecars []workload
	for _, w := range objs.workloads() {
		if container(w.pod.InitContainers, proxyContainer) != nil {
			sidecars = append(sidecars, w)
		}
	}
	type fleetConf struct{ postgres, ui, tokens, principals string }
	var proxies *fleetConf
	for _, w := range sidecars {
		pod := w.pod
		proxy := container(pod.InitContainers, proxyContainer)
		vols := volumeMap(pod)
		env := map[string]string{}
		for _, e := range proxy.Env {
			env[e.Name] = e.Value
		}
		ps = append(ps, accessProblems(objs, pod)...)
		ps = append(ps, hostNameProblems(w.id, pod)...)
		ps = append(ps, pgEnvProblems(w.id, proxy)...)
		for _, v := range pod.Volumes {
			if v.PersistentVolumeClaim != nil {
				bad("%s: volume %s is a claim: replicas cannot share one ledger; each pod's ledger is its own emptyDir, archived to S3", w.id, v.Name)
			}
		}
		data, err := configMapFile(objs, proxy, vols, env["UAPK_CONFIG"])
		if err != nil {
			bad("%s: UAPK_CONFIG: %v", w.id, err)
			continue
		}
		cfg, err := parseConfig([]byte(data))
		if err != nil {
			bad("%s: UAPK_CONFIG: %v", w.id, err)
			continue
		}
		if cfg.Approvals == nil || cfg.Approvals.Postgres == "" {
			bad("%s: no approvals.postgres in the config file: the proxy would keep its approvals to itself", w.id)
			continue
		}
		if cfg.Approvals.Instance != "" {
			bad("%s: approvals.instance %q: every replica would have that name; leave it to the host name, the pod's name", w.id, cfg.Approvals.Instance)
		}
		switch a := cfg.Archive; {
		case a == nil || a.S3 == nil || a.S3.Bucket == "":
			bad("%s: no archive.s3: each ledger is its pod's emptyDir, and the archive is the only copy that outlives the pod", w.id)
		case a.Instance != "":
			bad("%s: archive.instance %q: every replica would archive under the same PREFIX/APP/INSTANCE/; leave it to the host name, the pod's name", w.id, a.Instance)
		}
		ps = append(ps, postgresProblems(w.id, proxy, vols, cfg.Approvals.Postgres)...)
		var ui string
		if cfg.UI != nil {
			ui = cfg.UI.URL
		}
		this := &fleetConf{cfg.Approvals.Postgres, ui, configMapOf(proxy, vols, env["UAPK_ADMIN_TOKENS"]), configMapOf(proxy, vols, env["UAPK_PRINCIPALS"])}
		if proxies == nil {
			proxies = this
		} else if *this != *proxies {
			bad("%s: approvals.postgres, ui.url, admin tokens or principals differ from the other workload's", w.id)
		}
	}
	if proxies == nil {
		return append(ps, "no proxy of the fleet has a usable config file")
	}

	// The hubs.
	hub := deployment(objs, hubName)
	if hub == nil {
		return append(ps, "no Deployment "+hubName)
	}
	if hub.Spec.Replicas == nil || *hub.Spec.Replicas < 2 {
		bad("Deployment %s: replicas must be 2 or more: one hub is a single point of failure for every approver", hubName)
	}
	pod := &hub.Spec.Template.Spec
	ps = append(ps, hostNameProblems("Deployment/"+hubName, pod)...)
	if len(pod.InitContainers) != 0 {
		bad("Deployment %s: no init containers: the hub has no sidecar, no doors", hubName)
	}
	if len(pod.Containers) != 1 || pod.Containers[0].Name != hubName {
		return append(ps, fmt.Sprintf("Deployment %s: want exactly one container %s", hubName, hubName))
	}
	c := &pod.Containers[0]
	vols := volumeMap(pod)
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		bad("Deployment %s: automountServiceAccountToken must be false", hubName)
	}
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		bad("Deployment %s: pod runAsNonRoot must be true", hubName)
	}
	if psc := pod.SecurityContext; psc == nil || psc.FSGroup == nil || *psc.FSGroup != proxyUID {
		bad("Deployment %s: fsGroup must be %d, the group the 0440 Secret files belong to", hubName, proxyUID)
	}
	if pod.ShareProcessNamespace != nil && *pod.ShareProcessNamespace {
		bad("Deployment %s: shareProcessNamespace", hubName)
	}
	if side := deployment(objs, sidecarWorkload); side != nil && c.Image != container(side.Spec.Template.Spec.InitContainers, proxyContainer).Image {
		bad("container %s: image %q is not the proxies' %q: the hub is the same binary", hubName, c.Image,
			container(side.Spec.Template.Spec.InitContainers, proxyContainer).Image)
	}

	// The command line: hub and its own flags.
	if c.Command != nil || len(c.Args) == 0 || c.Args[0] != "hub" {
		bad("container %s: command %v args %v: want the image's entrypoint with args [hub ...]", hubName, c.Command, c.Args)
	}
	flags := map[string]string{}
	for i := 1; i < len(c.Args); i++ {
		a := c.Args[i]
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case !strings.HasPrefix(a, "--"):
			bad("container %s: argument %q: the hub takes no arguments, only flags", hubName, a)
			continue
		case !slices.Contains(hubFlags, name):
			bad("container %s: --%s is not a flag of uapk-proxy hub (it has no doors and no ledger); it would exit", hubName, name)
			continue
		case !hasValue && i+1 < len(c.Args):
			i++
			value = c.Args[i]
		}
		if _, dup := flags[name]; dup {
			bad("container %s: --%s given twice", hubName, name)
		}
		flags[name] = value
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "UAPK_") {
			bad("container %s: env %s: a variable wins over the config file silently; set the hub's flags as arguments", hubName, e.Name)
		}
	}
	ps = append(ps, pgEnvProblems("Deployment/"+hubName, c)...)

	// The admin address, its port, the probes and the Service.
	adminHost, adminPortStr, err := net.SplitHostPort(flags["admin-addr"])
	adminPort, _ := strconv.Atoi(adminPortStr)
	if err != nil || adminPort == 0 {
		bad("container %s: --admin-addr %q: want 0.0.0.0:PORT", hubName, flags["admin-addr"])
	} else if ip := net.ParseIP(adminHost); adminHost != "" && (ip == nil || !ip.IsUnspecified()) {
		bad("container %s: --admin-addr %q: the kubelet's probes and the Service come from outside the pod: listen on the pod IP", hubName, flags["admin-addr"])
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "admin" && int(p.ContainerPort) == adminPort }) {
		bad("container %s: no port named admin on %d, the port of --admin-addr", hubName, adminPort)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		paths []string
	}{
		{"readinessProbe", c.ReadinessProbe, []string{"/readyz"}},
		{"livenessProbe", c.LivenessProbe, []string{"/livez"}},
		{"startupProbe", c.StartupProbe, []string{"/readyz", "/livez"}},
	} {
		if p.probe == nil && p.name == "startupProbe" {
			continue
		}
		if p.probe == nil || p.probe.HTTPGet == nil {
			bad("container %s: %s: want an httpGet probe on %s", hubName, p.name, p.paths[0])
			continue
		}
		g := p.probe.HTTPGet
		if !slices.Contains(p.paths, g.Path) {
			bad("container %s: %s: path %q, want %s", hubName, p.name, g.Path, strings.Join(p.paths, " or "))
		}
		if port := portOf(c, g.Port); port != adminPort {
			bad("container %s: %s: port %d, want the admin port %d", hubName, p.name, port, adminPort)
		}
	}
	ps = append(ps, probeProblems(c)...)
	var svc *corev1.Service
	for _, s := range objs.services {
		if len(s.Spec.Selector) != 0 && selects(s.Spec.Selector, hub.Spec.Template.Labels) {
			svc = s
		}
		for _, w := range sidecars {
			if len(s.Spec.Selector) != 0 && selects(s.Spec.Selector, w.labels) {
				bad("Service %s selects the pods of %s: the hubs' Service must reach the hubs only", s.Name, w.id)
			}
		}
	}
	if svc == nil {
		bad("no Service selects the hubs' pods")
	} else {
		if len(svc.Spec.Ports) == 0 {
			bad("Service %s: no ports", svc.Name)
		}
		for _, p := range svc.Spec.Ports {
			if portOf(c, p.TargetPort) != adminPort {
				bad("Service %s: port %s targets %s, not the admin port %d", svc.Name, p.Name, p.TargetPort.String(), adminPort)
			}
		}
		if svc.Spec.SessionAffinity != corev1.ServiceAffinityNone {
			bad("Service %s: sessionAffinity %q, want None: the hubs share the desk's sign-ins in PostgreSQL, and affinity would pin a browser to a hub that may be gone", svc.Name, svc.Spec.SessionAffinity)
		}
	}
	if grace, err := time.ParseDuration(flags["shutdown-grace"]); err == nil {
		if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= grace {
			bad("Deployment %s: terminationGracePeriodSeconds must be above --shutdown-grace %s", hubName, grace)
		}
	}

	// What the hub reads: ConfigMaps of this build and the PostgreSQL
	// Secret, nothing else.
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			if objs.configMaps[v.ConfigMap.Name] == nil {
				bad("hub volume %s: ConfigMap %s is not in the build", v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil && v.Secret.SecretName == pgSecret:
		case v.EmptyDir != nil:
		default:
			bad("hub volume %s: only ConfigMaps, the Secret %s and an emptyDir: the hub keeps no state", v.Name, pgSecret)
		}
	}
	for _, r := range secretRefs(c, vols) {
		if r.secret != pgSecret {
			bad("container %s reads Secret %s (%s): the hub needs only %s", hubName, r.secret, r.via, pgSecret)
		}
	}
	for _, m := range c.VolumeMounts {
		if v := vols[m.Name]; v == nil {
			bad("container %s mounts unknown volume %s", hubName, m.Name)
		} else if v.EmptyDir == nil && !m.ReadOnly {
			bad("container %s: mount %s must be read-only", hubName, m.Name)
		}
	}
	if flags["admin-tokens"] == "" {
		bad("container %s: no --admin-tokens: each hub would generate an admin.token of its own, and a token would work at one hub behind the Service only", hubName)
	} else if data, err := configMapFile(objs, c, vols, flags["admin-tokens"]); err != nil {
		bad("container %s: --admin-tokens: %v", hubName, err)
	} else {
		ps = append(ps, tokensFileProblems(flags["admin-tokens"], []byte(data))...)
		if cm := configMapOf(c, vols, flags["admin-tokens"]); cm != proxies.tokens {
			bad("container %s: --admin-tokens is ConfigMap %s, not the proxies' %s: the fleet's tokens are one file", hubName, cm, proxies.tokens)
		}
	}
	if flags["principals"] != "" {
		if _, err := configMapFile(objs, c, vols, flags["principals"]); err != nil {
			bad("container %s: --principals: %v", hubName, err)
		} else if cm := configMapOf(c, vols, flags["principals"]); cm != proxies.principals {
			bad("container %s: --principals is ConfigMap %s, not the proxies' %s", hubName, cm, proxies.principals)
		}
	}

	// The hub's config file.
	if flags["config"] == "" {
		bad("container %s: no --config: the hub needs approvals.postgres", hubName)
	} else if data, err := configMapFile(objs, c, vols, flags["config"]); err != nil {
		bad("container %s: --config: %v", hubName, err)
	} else if hc, err := parseHubConfig([]byte(data)); err != nil {
		bad("container %s: --config %s: %v", hubName, flags["config"], err)
	} else {
		for key := range hc.flags {
			if _, ok := flags[strings.ReplaceAll(key, "_", "-")]; ok {
				bad("hub config %s: %s is also an argument, which wins: the file's value is never used", flags["config"], key)
			}
		}
		if hc.Approvals.Postgres != proxies.postgres {
			bad("hub config: approvals.postgres %q is not the proxies' %q: the hubs must serve the proxies' database", hc.Approvals.Postgres, proxies.postgres)
		}
		if hc.Approvals.Instance != "" {
			bad("hub config: approvals.instance %q: every hub would have that name; leave it to the host name", hc.Approvals.Instance)
		}
		ps = append(ps, postgresProblems("Deployment/"+hubName, c, vols, hc.Approvals.Postgres)...)
		var ui string
		if hc.UI != nil {
			ui = hc.UI.URL
		}
		if u, err := url.Parse(ui); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("hub config: ui.url %q: want the desk's public https URL", ui)
		}
		if ui != proxies.ui {
			bad("hub config: ui.url %q is not the proxies' ui.url %q: passkey decisions made at the desk would be refused by the proxies", ui, proxies.ui)
		}
	}

	ps = append(ps, fleetNetworkProblems(objs, hub, sidecars, adminPort)...)
	return ps
}

// fleetNetworkProblems wants the hubs' own NetworkPolicy, letting them
// reach only PostgreSQL and DNS, the same PostgreSQL peer as the proxies',
// and ingress only on the admin port; no policy of the agents selecting
// the hubs, whose rules would add to theirs.
func fleetNetworkProblems(objs *objects, hub *appsv1.Deployment, sidecars []workload, adminPort int) []string {
	var ps []string
	bad := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }
	var hubPolicy, sidePolicy *networkingv1.NetworkPolicy
	for _, np := range objs.netpols {
		sel := np.Spec.PodSelector
		if len(sel.MatchExpressions) != 0 || len(sel.MatchLabels) == 0 {
			bad("NetworkPolicy %s: select by matchLabels only", np.Name)
			continue
		}
		if selects(sel.MatchLabels, hub.Spec.Template.Labels) {
			if hubPolicy != nil {
				bad("the hubs' pods are selected by NetworkPolicy %s too: policies add up, and the hubs may reach only PostgreSQL and DNS", np.Name)
				if np.Name == sidecarWorkload {
					hubPolicy, sidePolicy = np, hubPolicy
				}
				continue
			}
			hubPolicy = np
			continue
		}
		if np.Name == sidecarWorkload {
			sidePolicy = np
		}
	}
	if hubPolicy == nil {
		return append(ps, "no NetworkPolicy selects the hubs' pods")
	}
	if hubPolicy.Name == sidecarWorkload {
		bad("the hubs' pods are selected by NetworkPolicy %s, the agents' (label uapk-proxy/guarded)", sidecarWorkload)
	}
	if !slices.Contains(hubPolicy.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) ||
		!slices.Contains(hubPolicy.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		bad("NetworkPolicy %s: policyTypes %v, want Ingress and Egress", hubPolicy.Name, hubPolicy.Spec.PolicyTypes)
	}
	hubPG := pgPeers(hubPolicy)
	for i, r := range hubPolicy.Spec.Egress {
		if len(r.To) == 0 || len(r.Ports) == 0 {
			bad("NetworkPolicy %s: egress rule %d allows any peer or any port", hubPolicy.Name, i)
		}
		for _, p := range r.Ports {
			if p.Port == nil || (p.Port.IntValue() != 53 && p.Port.IntValue() != pgPort) {
				bad("NetworkPolicy %s: egress rule %d: port %v: the hub reaches only PostgreSQL (%d) and DNS (53)", hubPolicy.Name, i, p.Port, pgPort)
			}
		}
		for _, peer := range r.To {
			if peer.IPBlock != nil && (peer.IPBlock.CIDR == "0.0.0.0/0" || peer.IPBlock.CIDR == "::/0") {
				bad("NetworkPolicy %s: egress rule %d: %s lets the hub reach anything", hubPolicy.Name, i, peer.IPBlock.CIDR)
			}
		}
	}
	if len(hubPG) == 0 {
		bad("NetworkPolicy %s: no egress to PostgreSQL on %d: the hubs cannot work", hubPolicy.Name, pgPort)
	}
	for i, r := range hubPolicy.Spec.Ingress {
		if len(r.From) == 0 || len(r.Ports) == 0 {
			bad("NetworkPolicy %s: ingress rule %d allows any peer or any port", hubPolicy.Name, i)
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.Port.IntValue() != adminPort {
				bad("NetworkPolicy %s: ingress rule %d: port %v, want only the admin port %d", hubPolicy.Name, i, p.Port, adminPort)
			}
		}
	}
	if len(hubPolicy.Spec.Ingress) == 0 {
		bad("NetworkPolicy %s: no ingress: the desk's users could not reach the hubs", hubPolicy.Name)
	}
	if sidePolicy == nil {
		return append(ps, "no NetworkPolicy "+sidecarWorkload+" for the proxies")
	}
	for _, w := range sidecars {
		if !selects(sidePolicy.Spec.PodSelector.MatchLabels, w.labels) {
			bad("NetworkPolicy %s does not select the pods of %s", sidePolicy.Name, w.id)
		}
	}
	if sidePG := pgPeers(sidePolicy); len(sidePG) == 0 {
		bad("NetworkPolicy %s: no egress to PostgreSQL on %d: the proxies cannot start", sidePolicy.Name, pgPort)
	} else if !reflect.DeepEqual(sidePG, hubPG) {
		bad("NetworkPolicy %s: the hubs' PostgreSQL peers %v are not the proxies' %v: they must reach the same database", hubPolicy.Name, hubPG, sidePG)
	}
	return ps
}

// pgPeers are the peers np lets its pods reach on the PostgreSQL port.
func pgPeers(np *networkingv1.NetworkPolicy) []networkingv1.NetworkPolicyPeer {
	var peers []networkingv1.NetworkPolicyPeer
	for _, r := range np.Spec.Egress {
		if slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.IntValue() == pgPort }) {
			peers = append(peers, r.To...)
		}
	}
	return peers
}

// postgresProblems checks approvals.postgres as container c reads it: no
// password in the URL (the config file is a ConfigMap), verify-full, and
// every file the driver reads (passfile, sslrootcert, ...) a key of the
// PostgreSQL Secret mounted read-only into c.
func postgresProblems(id string, c *corev1.Container, vols map[string]*corev1.Volume, dsn string) []string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return []string{fmt.Sprintf("%s: approvals.postgres: want postgres://USER@HOST:PORT/DB", id)}
	}
	var ps []string
	q := u.Query()
	if _, set := u.User.Password(); set || q.Has("password") {
		ps = append(ps, fmt.Sprintf("%s: approvals.postgres carries a password: the config file is a ConfigMap; put it in the Secret %s (passfile=)", id, pgSecret))
	}
	if q.Get("sslmode") != "verify-full" {
		ps = append(ps, fmt.Sprintf("%s: approvals.postgres: sslmode %q, want verify-full: the certificate and the host name checked", id, q.Get("sslmode")))
	}
	if !q.Has("passfile") {
		ps = append(ps, fmt.Sprintf("%s: approvals.postgres has no passfile=: the password would come from nowhere, or from the environment", id))
	}
	for _, k := range pgFileParams {
		if v := q.Get(k); q.Has(k) && !(k == "sslrootcert" && v == "system") {
			ps = append(ps, secretKeyProblems(c, vols, pgSecret, id+": approvals.postgres "+k, v)...)
		}
	}
	return ps
}

// pgEnvProblems: libpq's variables (PGPASSWORD, PGHOST, PGSERVICE, ...)
// would change where or as whom the driver connects, outside the config
// file these tests check; envFrom would hide them.
func pgEnvProblems(id string, c *corev1.Container) []string {
	var ps []string
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "PG") {
			ps = append(ps, fmt.Sprintf("%s: container %s: env %s is a libpq variable: approvals.postgres and the Secret %s say everything", id, c.Name, e.Name, pgSecret))
		}
	}
	if len(c.EnvFrom) != 0 {
		ps = append(ps, fmt.Sprintf("%s: container %s: envFrom: variables nobody reviews here", id, c.Name))
	}
	return ps
}

// hostNameProblems: a proxy's instance, and a hub's, is its host name,
// which the kubelet sets to the pod's name unless the pod says otherwise.
func hostNameProblems(id string, pod *corev1.PodSpec) []string {
	var ps []string
	if pod.Hostname != "" || pod.Subdomain != "" || (pod.SetHostnameAsFQDN != nil && *pod.SetHostnameAsFQDN) {
		ps = append(ps, fmt.Sprintf("%s: hostname, subdomain or setHostnameAsFQDN set: the host name, the instance's name in the fleet, would not be the pod's name", id))
	}
	if pod.HostNetwork {
		ps = append(ps, fmt.Sprintf("%s: hostNetwork: the host name would be the node's, the same for every pod on it", id))
	}
	return ps
}

// hubConfig is the hub's --config file as the hub reads it.
type hubConfig struct {
	flags     map[string]string
	Approvals approvalsConfig
	UI        *uiConfig
}

// parseHubConfig reads a hub config file as the hub does: approvals
// (postgres required), ui, identity and the hub's flags as keys; archive,
// notify and upstream_auth refused with the hub's reason; anything else
// unknown.
func parseHubConfig(data []byte) (*hubConfig, error) {
	var doc map[string]any
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		return nil, err
	}
	var problems []string
	flags := map[string]string{}
	sections := map[string]any{}
	for _, key := range keys(doc) {
		flag := strings.ReplaceAll(key, "_", "-")
		switch v := doc[key]; {
		case hubRefused[key] != "":
			problems = append(problems, key+": "+hubRefused[key])
		case key == "approvals" || key == "ui" || key == "identity":
			sections[key] = v
		case !slices.Contains(hubFlags, flag) || key == "config" || strings.Contains(key, "-"):
			problems = append(problems, fmt.Sprintf("unknown key %q", key))
		default:
			switch v.(type) {
			case map[string]any, []any, nil:
				problems = append(problems, key+": want one scalar value")
			default:
				flags[key] = fmt.Sprint(v)
			}
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	y, err := yaml.Marshal(sections)
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(y) // the sections, decoded strictly as the proxy does
	if err != nil {
		return nil, err
	}
	hc := &hubConfig{flags: flags, UI: cfg.UI}
	if cfg.Approvals == nil || cfg.Approvals.Postgres == "" {
		return nil, fmt.Errorf("approvals.postgres is required: the fleet's shared approval store")
	}
	hc.Approvals = *cfg.Approvals
	return hc, nil
}

// TestFleetProblems shows that fleetProblems catches each way the fleet
// could break: every case breaks the built fleet one way and wants the
// problem named.
func TestFleetProblems(t *testing.T) {
	hubPod := func(o *objects) *corev1.PodSpec { return &deployment(o, hubName).Spec.Template.Spec }
	hubC := func(o *objects) *corev1.Container { return &hubPod(o).Containers[0] }
	sidePod := func(o *objects) *corev1.PodSpec { return &deployment(o, sidecarWorkload).Spec.Template.Spec }
	proxyC := func(o *objects) *corev1.Container { return container(sidePod(o).InitContainers, proxyContainer) }
	policy := func(o *objects, name string) *networkingv1.NetworkPolicy {
		for _, np := range o.netpols {
			if np.Name == name {
				return np
			}
		}
		t.Fatalf("no NetworkPolicy %s", name)
		return nil
	}
	editConfigMap := func(o *objects, prefix, key string, edit func(string) string) {
		for name, cm := range o.configMaps {
			if strings.HasPrefix(name, prefix) {
				before := cm.Data[key]
				cm.Data[key] = edit(before)
				if cm.Data[key] == before {
					t.Fatalf("ConfigMap %s: the edit changed nothing", name)
				}
				return
			}
		}
		t.Fatalf("no ConfigMap %s*", prefix)
	}
	replace := func(old, new string) func(string) string {
		return func(s string) string { return strings.Replace(s, old, new, 1) }
	}
	const passfile = "passfile=/var/run/secrets/postgres/pgpass"
	setArg := func(c *corev1.Container, flag, value string) {
		for i, a := range c.Args {
			if strings.HasPrefix(a, "--"+flag+"=") {
				c.Args[i] = "--" + flag + "=" + value
				return
			}
		}
		t.Fatalf("no --%s", flag)
	}
	dropArg := func(c *corev1.Container, flag string) {
		n := len(c.Args)
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--"+flag+"=") })
		if len(c.Args) == n {
			t.Fatalf("no --%s", flag)
		}
	}
	one := int32(1)

	for _, tc := range []struct {
		name   string
		mutate func(o *objects)
		want   string
	}{
		// The hubs.
		{"hub with a door flag", func(o *objects) {
			hubC(o).Args = append(hubC(o).Args, "--upstream=https://erp.internal.example.com")
		}, "--upstream is not a flag of uapk-proxy hub"},
		{"hub runs serve", func(o *objects) { hubC(o).Args[0] = "serve" }, "want the image's entrypoint with args [hub ...]"},
		{"one hub", func(o *objects) { deployment(o, hubName).Spec.Replicas = &one }, "Deployment uapk-hub: replicas must be 2 or more"},
		{"hub with a sidecar patched in", func(o *objects) {
			hubPod(o).InitContainers = []corev1.Container{{Name: proxyContainer}}
		}, "no init containers"},
		{"hub without --admin-tokens", func(o *objects) { dropArg(hubC(o), "admin-tokens") }, "no --admin-tokens"},
		{"hub with tokens of its own", func(o *objects) {
			o.configMaps["hub-tokens"] = &corev1.ConfigMap{Data: map[string]string{"admin-tokens.yaml": string(readFile(t, baseAdminTokens))}}
			volumeMap(hubPod(o))["admin-tokens"].ConfigMap.Name = "hub-tokens"
		}, "not the proxies'"},
		{"hub with principals of its own", func(o *objects) {
			o.configMaps["hub-principals"] = &corev1.ConfigMap{Data: map[string]string{"principals.yaml": "principals: []\n"}}
			volumeMap(hubPod(o))["principals"].ConfigMap.Name = "hub-principals"
		}, "--principals is ConfigMap hub-principals, not the proxies'"},
		{"hub with UAPK_ env", func(o *objects) {
			hubC(o).Env = append(hubC(o).Env, corev1.EnvVar{Name: "UAPK_ADMIN_ADDR", Value: "127.0.0.1:8090"})
		}, "env UAPK_ADMIN_ADDR"},
		{"hub on loopback", func(o *objects) { setArg(hubC(o), "admin-addr", "127.0.0.1:8090") }, "listen on the pod IP"},
		{"readiness on another port", func(o *objects) {
			hubC(o).ReadinessProbe.HTTPGet.Port = intstr.FromInt32(9090)
		}, "readinessProbe: port 9090, want the admin port 8090"},
		{"liveness on /readyz", func(o *objects) { hubC(o).LivenessProbe.HTTPGet.Path = "/readyz" }, `livenessProbe: path "/readyz", want /livez`},
		{"probe on an admin endpoint", func(o *objects) { hubC(o).StartupProbe.HTTPGet.Path = "/v1/approvals" }, `startupProbe: path "/v1/approvals"`},
		{"hub reads the ERP credential", func(o *objects) {
			hubPod(o).Volumes = append(hubPod(o).Volumes, corev1.Volume{Name: "erp", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: erpSecret}}})
			hubC(o).VolumeMounts = append(hubC(o).VolumeMounts, corev1.VolumeMount{Name: "erp", MountPath: "/erp", ReadOnly: true})
		}, "container uapk-hub reads Secret uapk-proxy-erp"},
		{"hub with a data volume", func(o *objects) {
			hubPod(o).Volumes = append(hubPod(o).Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "hub"}}})
		}, "the hub keeps no state"},
		{"hub without fsGroup", func(o *objects) { hubPod(o).SecurityContext.FSGroup = nil }, "fsGroup must be 65532"},
		{"hub's host name fixed", func(o *objects) { hubPod(o).Hostname = "hub" }, "Deployment/uapk-hub: hostname"},
		{"hub config with archive", func(o *objects) {
			editConfigMap(o, "uapk-hub-config-", "config.yaml", func(s string) string { return s + "archive:\n  segment_records: 10\n" })
		}, "archive: the hub keeps no ledger"},
		{"hub config with an unknown key", func(o *objects) {
			editConfigMap(o, "uapk-hub-config-", "config.yaml", func(s string) string { return s + "upstream: https://erp\n" })
		}, `unknown key "upstream"`},
		{"hub config key the argument overrides", func(o *objects) {
			editConfigMap(o, "uapk-hub-config-", "config.yaml", func(s string) string { return s + "log_level: debug\n" })
		}, "log_level is also an argument"},
		{"hub config without approvals", func(o *objects) {
			editConfigMap(o, "uapk-hub-config-", "config.yaml", replace("approvals:\n  postgres:", "# approvals:\n#  postgres:"))
		}, "approvals.postgres is required"},
		{"hubs on another database", func(o *objects) {
			editConfigMap(o, "uapk-hub-config-", "config.yaml", replace(":5432/uapk?", ":5432/other?"))
		}, "is not the proxies'"},
		{"hubs' ui.url not the proxies'", func(o *objects) {
			editConfigMap(o, "uapk-hub-config-", "config.yaml", replace("url: https://approvals.corp.example", "url: https://desk.corp.example"))
		}, "passkey decisions made at the desk would be refused"},
		{"Service with affinity", func(o *objects) { o.services[hubName].Spec.SessionAffinity = corev1.ServiceAffinityClientIP }, "sessionAffinity"},
		{"Service to another port", func(o *objects) { o.services[hubName].Spec.Ports[0].TargetPort = intstr.FromInt32(8081) }, "not the admin port 8090"},
		{"no Service", func(o *objects) { delete(o.services, hubName) }, "no Service selects the hubs' pods"},
		{"short grace period", func(o *objects) {
			g := int64(10)
			hubPod(o).TerminationGracePeriodSeconds = &g
		}, "terminationGracePeriodSeconds must be above --shutdown-grace"},

		// The password, only from the Secret.
		{"password in the proxies' URL", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace("postgres://uapk@", "postgres://uapk:hunter2@"))
		}, "approvals.postgres carries a password"},
		{"password parameter in the hubs' URL", func(o *objects) {
			editConfigMap(o, "uapk-hub-config-", "config.yaml", replace(passfile, "password=hunter2"))
		}, "approvals.postgres carries a password"},
		{"no passfile", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace("&"+passfile, ""))
		}, "has no passfile="},
		{"passfile outside the Secret", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace(passfile, "passfile=/etc/uapk-proxy/config/pgpass"))
		}, "approvals.postgres passfile /etc/uapk-proxy/config/pgpass: volume config is not the Secret uapk-proxy-postgres"},
		{"Secret not mounted in the hub", func(o *objects) {
			hubC(o).VolumeMounts = slices.DeleteFunc(hubC(o).VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "postgres" })
		}, "Deployment/uapk-hub: approvals.postgres passfile /var/run/secrets/postgres/pgpass: not in a volume mount of the uapk-hub container"},
		{"Secret optional", func(o *objects) {
			optional := true
			volumeMap(sidePod(o))["postgres"].Secret.Optional = &optional
		}, "Secret uapk-proxy-postgres is optional"},
		{"Secret readable by others", func(o *objects) {
			mode := int32(0o444)
			volumeMap(hubPod(o))["postgres"].Secret.DefaultMode = &mode
		}, "volume postgres: defaultMode must leave others no access"},
		{"sslrootcert not a key", func(o *objects) {
			volumeMap(sidePod(o))["postgres"].Secret.Items = []corev1.KeyToPath{{Key: "pgpass", Path: "pgpass"}}
		}, "approvals.postgres sslrootcert /var/run/secrets/postgres/ca.crt: not a key of the Secret uapk-proxy-postgres"},
		{"sslmode require", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace("sslmode=verify-full", "sslmode=require"))
		}, `sslmode "require", want verify-full`},
		{"PGPASSWORD in the proxy's env", func(o *objects) {
			proxyC(o).Env = append(proxyC(o).Env, corev1.EnvVar{Name: "PGPASSWORD", Value: "hunter2"})
		}, "env PGPASSWORD is a libpq variable"},
		{"PGSERVICEFILE in the hub's env", func(o *objects) {
			hubC(o).Env = append(hubC(o).Env, corev1.EnvVar{Name: "PGSERVICEFILE", Value: "/etc/pg_service.conf"})
		}, "env PGSERVICEFILE is a libpq variable"},
		{"the fleet generates the Secret", func(o *objects) {
			o.secrets[pgSecret] = &corev1.Secret{StringData: map[string]string{"pgpass": "*:*:*:*:x"}}
		}, "the fleet generates Secrets [uapk-proxy-postgres]"},
		{"the agent reads the PostgreSQL Secret", func(o *objects) {
			agent := container(sidePod(o).Containers, agentContainer)
			agent.VolumeMounts = append(agent.VolumeMounts, corev1.VolumeMount{Name: "postgres", MountPath: "/pg", ReadOnly: true})
		}, "container agent reads the fleet's PostgreSQL password, Secret uapk-proxy-postgres (volume postgres)"},

		// Instances: the pod's name.
		{"approvals.instance fixed", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace(passfile+"\n", passfile+"\n  instance: proxy-a\n"))
		}, `approvals.instance "proxy-a": every replica would have that name`},
		{"archive.instance fixed", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace("  segment_interval: 1m\n", "  segment_interval: 1m\n  instance: proxy-a\n"))
		}, `archive.instance "proxy-a": every replica would archive under the same PREFIX/APP/INSTANCE/`},
		{"no S3 archive", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace("  s3:\n    bucket: acme-sox-ledger\n    prefix: uapk\n    region: us-east-1\n", ""))
		}, "no archive.s3"},
		{"no approvals in the proxies' config", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace("approvals:\n  postgres:", "# approvals:\n#  postgres:"))
		}, "no approvals.postgres in the config file"},
		{"unknown key in approvals", func(o *objects) {
			editConfigMap(o, "uapk-proxy-config-", "config.yaml", replace(passfile+"\n", passfile+"\n  password: hunter2\n"))
		}, `approvals: json: unknown field "password"`},
		{"the proxies' host name fixed", func(o *objects) { sidePod(o).Hostname = "proxy" }, "Deployment/financial-ai-assistant: hostname"},
		{"one proxy", func(o *objects) { deployment(o, sidecarWorkload).Spec.Replicas = &one }, "replicas must be more than 1"},
		{"replicas sharing a claim", func(o *objects) {
			v := volumeMap(sidePod(o))["data"]
			v.EmptyDir, v.PersistentVolumeClaim = nil, &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "ledger"}
		}, "replicas cannot share one ledger"},

		// The network.
		{"hub reaches the ERP", func(o *objects) {
			np := policy(o, hubName)
			port := intstr.FromInt32(443)
			np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}})
		}, "the hub reaches only PostgreSQL (5432) and DNS (53)"},
		{"hub reaches PostgreSQL anywhere", func(o *objects) {
			np := policy(o, hubName)
			np.Spec.Egress[1].To = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}}
		}, "0.0.0.0/0 lets the hub reach anything"},
		{"hub's PostgreSQL peer not the proxies'", func(o *objects) {
			policy(o, hubName).Spec.Egress[1].To[0].IPBlock.CIDR = "10.0.0.0/8"
		}, "are not the proxies'"},
		{"proxies cannot reach PostgreSQL", func(o *objects) {
			np := policy(o, sidecarWorkload)
			np.Spec.Egress = slices.DeleteFunc(np.Spec.Egress, func(r networkingv1.NetworkPolicyEgressRule) bool {
				return slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port.IntValue() == pgPort })
			})
		}, "no egress to PostgreSQL on 5432: the proxies cannot start"},
		{"hub ingress on every port", func(o *objects) { policy(o, hubName).Spec.Ingress[0].Ports = nil }, "ingress rule 0 allows any peer or any port"},
		{"hub ingress from anyone", func(o *objects) { policy(o, hubName).Spec.Ingress[0].From = nil }, "ingress rule 0 allows any peer or any port"},
		{"hub carries the agents' label", func(o *objects) {
			deployment(o, hubName).Spec.Template.Labels["uapk-proxy/guarded"] = "true"
		}, "selected by NetworkPolicy"},
		{"no hub policy", func(o *objects) {
			o.netpols = slices.DeleteFunc(o.netpols, func(np *networkingv1.NetworkPolicy) bool { return np.Name == hubName })
		}, "no NetworkPolicy selects the hubs' pods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := build(t, fleetDir)
			if ps := fleetProblems(objs); len(ps) != 0 {
				t.Fatalf("problems before breaking it: %q", ps)
			}
			tc.mutate(objs)
			ps := fleetProblems(objs)
			if !slices.ContainsFunc(ps, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("want a problem containing %q, got %q", tc.want, ps)
			}
		})
	}
}

// TestFleetPostgresURL hands each approvals.postgres of the fleet to the
// PostgreSQL driver the proxy and the hub use (pgx's ParseConfig, as
// internal/pgstore does), with the placeholder Secret's keys where the pods
// mount them: the password is the Secret's and comes from nowhere else, and
// the connection is TLS with the certificate and host name checked against
// the Secret's CA, with no plaintext fallback.
func TestFleetPostgresURL(t *testing.T) {
	for _, v := range []string{"PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGHOST", "PGUSER"} {
		t.Setenv(v, "")
	}
	secret := placeholderSecret(t)
	dir := t.TempDir()
	for k, v := range secret.StringData {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pass, err := pgpassfile.ParsePassfile(strings.NewReader(secret.StringData["pgpass"]))
	if err != nil || len(pass.Entries) != 1 {
		t.Fatalf("pgpass: want one entry: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(secret.StringData["ca.crt"])) {
		t.Fatal("ca.crt: no certificate")
	}

	objs := build(t, fleetDir)
	dsns := map[string]string{}
	for _, f := range []string{fleetConfig, hubConfigFile} {
		dsns[f] = dsnOf(t, f)
	}
	hub := deployment(objs, hubName)
	side := deployment(objs, sidecarWorkload)
	if hub == nil || side == nil {
		t.Fatal("no hub or no sidecar Deployment")
	}
	for f, dsn := range dsns {
		t.Run(f, func(t *testing.T) {
			// Where the pods mount the Secret.
			var mountPath string
			for _, d := range []*appsv1.Deployment{side, hub} {
				pod := &d.Spec.Template.Spec
				for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
					for _, m := range c.VolumeMounts {
						if v := volumeMap(pod)[m.Name]; v != nil && v.Secret != nil && v.Secret.SecretName == pgSecret {
							if mountPath != "" && m.MountPath != mountPath {
								t.Fatalf("the Secret is mounted at %s and at %s", mountPath, m.MountPath)
							}
							mountPath = m.MountPath
						}
					}
				}
			}
			if mountPath == "" || !strings.Contains(dsn, mountPath+"/") {
				t.Fatalf("%q names no file under the Secret's mount %q", dsn, mountPath)
			}
			cfg, err := pgconn.ParseConfig(strings.ReplaceAll(dsn, mountPath+"/", dir+"/"))
			if err != nil {
				t.Fatalf("pgconn.ParseConfig: %v", err)
			}
			if want := pass.Entries[0].Password; cfg.Password != want {
				t.Errorf("password %q, want the Secret's pgpass %q", cfg.Password, want)
			}
			if cfg.TLSConfig == nil || cfg.TLSConfig.InsecureSkipVerify || cfg.TLSConfig.ServerName != cfg.Host {
				t.Errorf("TLS: want the certificate and the host name %s checked", cfg.Host)
			} else if cfg.TLSConfig.RootCAs == nil || !cfg.TLSConfig.RootCAs.Equal(roots) {
				t.Error("TLS: the roots are not the Secret's ca.crt")
			}
			if len(cfg.Fallbacks) != 0 {
				t.Errorf("%d fallbacks: a plaintext or unverified fallback would be tried", len(cfg.Fallbacks))
			}
			// Without the Secret's files there is no password at all.
			empty := t.TempDir()
			os.WriteFile(filepath.Join(empty, "ca.crt"), []byte(secret.StringData["ca.crt"]), 0o600)
			cfg, err = pgconn.ParseConfig(strings.ReplaceAll(dsn, mountPath+"/", empty+"/"))
			if err != nil {
				t.Fatalf("pgconn.ParseConfig without pgpass: %v", err)
			}
			if cfg.Password != "" {
				t.Errorf("without the Secret's pgpass the password is %q: it comes from somewhere else", cfg.Password)
			}
		})
	}
}

// TestPostgresSecretPlaceholder checks deploy/fleet/postgres-secret: the
// one Secret, with exactly the keys the URLs name, values that are
// recognisably placeholders, and a CA no server's certificate chains to.
func TestPostgresSecretPlaceholder(t *testing.T) {
	s := placeholderSecret(t)
	if got := keys(s.StringData); !slices.Equal(got, []string{"ca.crt", "pgpass"}) || len(s.Data) != 0 {
		t.Errorf("keys %v (data %v): want stringData ca.crt and pgpass, the files passfile= and sslrootcert= name", got, keys(s.Data))
	}
	u, err := url.Parse(dsnOf(t, fleetConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"passfile", "sslrootcert"} {
		if _, ok := s.StringData[filepath.Base(u.Query().Get(k))]; !ok {
			t.Errorf("approvals.postgres %s=%s: no such key in the placeholder Secret", k, u.Query().Get(k))
		}
	}
	pass, err := pgpassfile.ParsePassfile(strings.NewReader(s.StringData["pgpass"]))
	if err != nil || len(pass.Entries) != 1 {
		t.Fatalf("pgpass: want exactly one entry, got %v", err)
	}
	if e := pass.Entries[0]; !strings.HasPrefix(e.Password, "REPLACE-ME") {
		t.Errorf("pgpass: password %q does not say it is a placeholder", e.Password)
	}
	block, rest := pem.Decode([]byte(s.StringData["ca.crt"]))
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatal("ca.crt: want exactly one CERTIFICATE PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA || !strings.Contains(cert.Subject.CommonName, "PLACEHOLDER") {
		t.Errorf("ca.crt: CA %v, subject %q: want a CA named PLACEHOLDER", cert.IsCA, cert.Subject.CommonName)
	}
	// Not part of the fleet: re-applying it never resets the real Secret.
	if objs := build(t, fleetDir); len(objs.secrets) != 0 {
		t.Errorf("deploy/fleet builds Secrets %v", keys(objs.secrets))
	}
}

// Helpers.

func placeholderSecret(t *testing.T) *corev1.Secret {
	t.Helper()
	objs := build(t, fleetSecretDir)
	s := objs.secrets[pgSecret]
	if s == nil || len(objs.secrets) != 1 || len(objs.configMaps)+len(objs.deployments)+len(objs.jobs)+len(objs.netpols)+len(objs.services) != 0 {
		t.Fatalf("%s: want only the Secret %s, got Secrets %v", fleetSecretDir, pgSecret, keys(objs.secrets))
	}
	if s.Namespace != "" {
		t.Errorf("Secret %s: namespace set", s.Name)
	}
	return s
}

func dsnOf(t *testing.T, file string) string {
	t.Helper()
	var doc struct {
		Approvals approvalsConfig `json:"approvals"`
	}
	if err := yaml.Unmarshal(readFile(t, file), &doc); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return doc.Approvals.Postgres
}

func deployment(o *objects, name string) *appsv1.Deployment {
	for _, d := range o.deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// configMapOf names the ConfigMap the file at path comes from, for
// container c ("" if none).
func configMapOf(c *corev1.Container, vols map[string]*corev1.Volume, path string) string {
	m := mountAt(c, filepath.Dir(path))
	if m == nil || vols[m.Name] == nil || vols[m.Name].ConfigMap == nil {
		return ""
	}
	return vols[m.Name].ConfigMap.Name
}

// portOf resolves a probe's or Service's port against c's named ports (0
// if it names none).
func portOf(c *corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

// TestPgxIsTheProxys keeps TestFleetPostgresURL honest: the driver that
// parses the URLs here is the version the proxy and the hub are built with.
func TestPgxIsTheProxys(t *testing.T) {
	version := func(gomod string) string {
		for _, line := range strings.Split(string(readFile(t, gomod)), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/jackc/pgx/v5" {
				return f[1]
			}
		}
		t.Fatalf("%s: no github.com/jackc/pgx/v5", gomod)
		return ""
	}
	if here, proxy := version("go.mod"), version("../go.mod"); here != proxy {
		t.Errorf("deploy/go.mod has pgx %s, the proxy %s: run  cd deploy && go get github.com/jackc/pgx/v5@%s", here, proxy, proxy)
	}
}
