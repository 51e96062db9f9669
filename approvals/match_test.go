package approvals_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// step is one decision in a scenario, with the refusal code it must get
// ("" when it counts) and the approval's status after it.
type step struct {
	who, decision string
	want          record.Reason
	status        string
}

func approve(who string, want record.Reason, status string) step {
	return step{who, approvals.Approve, want, status}
}
func reject(who string, want record.Reason, status string) step {
	return step{who, approvals.Reject, want, status}
}

const (
	pendingS  = approvals.StatusPending
	approvedS = approvals.StatusApproved
	rejectedS = approvals.StatusRejected
)

func TestApplyMatching(t *testing.T) {
	const (
		cfo   = "cfo@corp.example"
		cfo2  = "cfo2@corp.example"
		ctl   = "controller@corp.example"
		both  = "both@corp.example"
		cfoFM = "cfo-fm@corp.example"
		fm    = "fm@corp.example"
		clerk = "clerk@corp.example"
	)
	cases := []struct {
		name  string
		req   rules.Requirement
		steps []step
		roles map[string]string // approver -> role counted, at the end
	}{
		{
			name:  "REQUIRE_APPROVAL {cfo,controller}: one controller completes it",
			req:   requireCFOorController,
			steps: []step{approve(ctl, "", approvedS)},
			roles: map[string]string{ctl: "controller"},
		},
		{
			name:  "REQUIRE_APPROVAL {cfo,controller}: one cfo completes it",
			req:   requireCFOorController,
			steps: []step{approve(cfo, "", approvedS), approve(ctl, approvals.RefuseClosed, approvedS)},
			roles: map[string]string{cfo: "cfo"},
		},
		{
			name:  "REQUIRE_APPROVAL {cfo,controller}: a holder of both roles counts once",
			req:   requireCFOorController,
			steps: []step{approve(both, "", approvedS)},
			roles: map[string]string{both: "cfo"},
		},
		{
			name:  "DUAL: cfo then controller",
			req:   dualCFOController,
			steps: []step{approve(cfo, "", pendingS), approve(ctl, "", approvedS)},
			roles: map[string]string{cfo: "cfo", ctl: "controller"},
		},
		{
			name:  "DUAL: controller then cfo",
			req:   dualCFOController,
			steps: []step{approve(ctl, "", pendingS), approve(cfo, "", approvedS)},
			roles: map[string]string{cfo: "cfo", ctl: "controller"},
		},
		{
			name: "DUAL: holder of both first, then a cfo: the augmenting path moves the first to controller",
			req:  dualCFOController,
			steps: []step{
				approve(both, "", pendingS),
				approve(cfo, "", approvedS),
			},
			roles: map[string]string{both: "controller", cfo: "cfo"},
		},
		{
			name:  "DUAL: a cfo first, then the holder of both",
			req:   dualCFOController,
			steps: []step{approve(cfo, "", pendingS), approve(both, "", approvedS)},
			roles: map[string]string{cfo: "cfo", both: "controller"},
		},
		{
			name:  "DUAL: holder of both, then a controller",
			req:   dualCFOController,
			steps: []step{approve(both, "", pendingS), approve(ctl, "", approvedS)},
			roles: map[string]string{both: "cfo", ctl: "controller"},
		},
		{
			name: "DUAL: two cfo-only people never complete it",
			req:  dualCFOController,
			steps: []step{
				approve(cfo, "", pendingS),
				approve(cfo2, approvals.RefuseRoleFilled, pendingS),
			},
			roles: map[string]string{cfo: "cfo"},
		},
		{
			name: "DUAL: a refused second cfo does not stop a controller completing it",
			req:  dualCFOController,
			steps: []step{
				approve(cfo, "", pendingS),
				approve(cfo2, approvals.RefuseRoleFilled, pendingS),
				approve(ctl, "", approvedS),
			},
			roles: map[string]string{cfo: "cfo", ctl: "controller"},
		},
		{
			name: "DUAL: one person cannot fill both slots",
			req:  dualCFOController,
			steps: []step{
				approve(both, "", pendingS),
				approve(both, approvals.RefuseDuplicate, pendingS),
			},
			roles: map[string]string{both: "cfo"},
		},
		{
			name: "three slots: a path of length three reassigns two earlier approvers",
			req:  tripleCFOControllerFM,
			steps: []step{
				approve(both, "", pendingS),  // both -> cfo
				approve(cfoFM, "", pendingS), // both -> controller, cfoFM -> cfo
				approve(ctl, "", approvedS),  // cfoFM -> finance_manager, both -> cfo, ctl -> controller
			},
			roles: map[string]string{both: "cfo", cfoFM: "finance_manager", ctl: "controller"},
		},
		{
			name: "three slots: the same people in the opposite order",
			req:  tripleCFOControllerFM,
			steps: []step{
				approve(ctl, "", pendingS),
				approve(cfoFM, "", pendingS),
				approve(both, "", approvedS),
			},
			roles: map[string]string{ctl: "controller", cfoFM: "finance_manager", both: "cfo"},
		},
		{
			name: "three slots: a second cfo-only person is role_filled, the rest complete it",
			req:  tripleCFOControllerFM,
			steps: []step{
				approve(cfo, "", pendingS),
				approve(cfo2, approvals.RefuseRoleFilled, pendingS),
				approve(both, "", pendingS),
				approve(fm, "", approvedS),
			},
			roles: map[string]string{cfo: "cfo", both: "controller", fm: "finance_manager"},
		},
		{
			name: "three slots: three who can only be cfo or controller leave finance_manager open",
			req:  tripleCFOControllerFM,
			steps: []step{
				approve(cfo, "", pendingS),
				approve(both, "", pendingS),
				approve(ctl, approvals.RefuseRoleFilled, pendingS),
				approve(cfo2, approvals.RefuseRoleFilled, pendingS),
			},
			roles: map[string]string{cfo: "cfo", both: "controller"},
		},
		{
			name: "overlapping slots {cfo,controller},{controller},{cfo}",
			req:  rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo", "controller"}, {"controller"}, {"cfo"}}},
			steps: []step{
				approve(cfo, "", pendingS),
				approve(cfo2, "", pendingS),
				approve(ctl, "", approvedS),
			},
			roles: map[string]string{cfo: "cfo", cfo2: "cfo", ctl: "controller"},
		},
		{
			name:  "DUAL: a controller's rejection ends it at once",
			req:   dualCFOController,
			steps: []step{reject(ctl, "", rejectedS), approve(cfo, approvals.RefuseClosed, rejectedS)},
			roles: map[string]string{ctl: "controller"},
		},
		{
			name:  "DUAL: a rejection after one approval ends it",
			req:   dualCFOController,
			steps: []step{approve(cfo, "", pendingS), reject(ctl, "", rejectedS)},
			roles: map[string]string{cfo: "cfo", ctl: "controller"},
		},
		{
			name: "DUAL: a second cfo may reject even though the cfo slot is filled",
			req:  dualCFOController,
			steps: []step{
				approve(cfo, "", pendingS),
				reject(cfo2, "", rejectedS),
			},
			roles: map[string]string{cfo: "cfo", cfo2: "cfo"},
		},
		{
			name: "rejection by a holder of no needed role is wrong_role and changes nothing",
			req:  dualCFOController,
			steps: []step{
				approve(cfo, "", pendingS),
				reject(clerk, approvals.RefuseWrongRole, pendingS),
				reject(fm, approvals.RefuseWrongRole, pendingS),
				approve(ctl, "", approvedS),
			},
			roles: map[string]string{cfo: "cfo", ctl: "controller"},
		},
		{
			name:  "three slots: a finance_manager's rejection ends it",
			req:   tripleCFOControllerFM,
			steps: []step{approve(both, "", pendingS), reject(fm, "", rejectedS)},
			roles: map[string]string{both: "cfo", fm: "finance_manager"},
		},
	}
	ps := principals(t, cast)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := pending(c.req)
			at := now
			for i, s := range c.steps {
				at = at.Add(time.Second) // decisions come in one after another
				before := *a
				before.Decisions = slices.Clone(a.Decisions)
				_, ref := approvals.Apply(a, signed(s.who, s.decision, at), ps, at)
				var got record.Reason
				if ref != nil {
					got = ref.Code
				}
				if got != s.want {
					t.Fatalf("step %d (%s %s): refusal %q (%v), want %q", i, s.who, s.decision, got, ref, s.want)
				}
				if ref != nil && !reflect.DeepEqual(*a, before) {
					t.Fatalf("step %d: refused, yet the approval changed", i)
				}
				if a.Status != s.status {
					t.Fatalf("step %d (%s %s): status %q, want %q", i, s.who, s.decision, a.Status, s.status)
				}
			}
			if got := rolesOf(a); !reflect.DeepEqual(got, c.roles) {
				t.Errorf("roles counted %v, want %v", got, c.roles)
			}
			if a.Status == approvedS {
				assertDistinctSlots(t, a)
			}
		})
	}
}

// TestApplyDepartedApprover: an approver removed from the principals file
// after approving keeps counting, for the role recorded with their decision.
func TestApplyDepartedApprover(t *testing.T) {
	var stayed []person
	for _, p := range cast {
		if p.id != "cfo@corp.example" {
			stayed = append(stayed, p)
		}
	}
	ps := principals(t, stayed)
	departed := approvals.Decision{Approver: "cfo@corp.example", Role: "cfo", Decision: approvals.Approve,
		SignedAt: now.Format(time.RFC3339), Signature: validSig(), Record: 9}

	cases := []struct {
		name   string
		who    string
		want   record.Reason
		status string
		roles  map[string]string
	}{
		{"a controller completes it", "controller@corp.example", "", approvedS,
			map[string]string{"cfo@corp.example": "cfo", "controller@corp.example": "controller"}},
		{"the holder of both takes controller", "both@corp.example", "", approvedS,
			map[string]string{"cfo@corp.example": "cfo", "both@corp.example": "controller"}},
		{"another cfo finds the cfo slot filled", "cfo2@corp.example", approvals.RefuseRoleFilled, pendingS,
			map[string]string{"cfo@corp.example": "cfo"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := pending(dualCFOController)
			a.Decisions = []approvals.Decision{departed}
			_, ref := approvals.Apply(a, signed(c.who, approvals.Approve, now), ps, now)
			var got record.Reason
			if ref != nil {
				got = ref.Code
			}
			if got != c.want || a.Status != c.status {
				t.Fatalf("refusal %q (%v), status %q; want %q, %q", got, ref, a.Status, c.want, c.status)
			}
			if r := rolesOf(a); !reflect.DeepEqual(r, c.roles) {
				t.Errorf("roles %v, want %v", r, c.roles)
			}
		})
	}
}

// assertDistinctSlots checks an approved approval: every slot has its own
// approver, who holds the role recorded, and that role belongs to the slot.
func assertDistinctSlots(t *testing.T, a *approvals.Approval) {
	t.Helper()
	var approvers []approvals.Decision
	for _, d := range a.Decisions {
		if d.Decision == approvals.Approve {
			approvers = append(approvers, d)
		}
	}
	if len(approvers) != len(a.Requirement.Slots) {
		t.Fatalf("approved with %d approvers for %d slots", len(approvers), len(a.Requirement.Slots))
	}
	// Roles may repeat across slots ({cfo,controller},{cfo}), so check a
	// perfect matching of the recorded roles to slots exists.
	roles := make([][]string, len(approvers))
	for i, d := range approvers {
		roles[i] = []string{d.Role}
	}
	if !perfectMatching(a.Requirement.Slots, roles) {
		t.Errorf("recorded roles %v do not fill slots %v one each", rolesOf(a), a.Requirement.Slots)
	}
}

// perfectMatching reports, by brute force over permutations, whether
// people (each a list of roles) can fill every slot, one person per slot.
func perfectMatching(slots [][]string, people [][]string) bool {
	used := make([]bool, len(people))
	var fill func(i int) bool
	fill = func(i int) bool {
		if i == len(slots) {
			return true
		}
		for p, roles := range people {
			if used[p] || !slices.ContainsFunc(roles, func(r string) bool { return slices.Contains(slots[i], r) }) {
				continue
			}
			used[p] = true
			if fill(i + 1) {
				return true
			}
			used[p] = false
		}
		return false
	}
	return fill(0)
}

// TestApplyMatchingOrderFree checks, on random small requirements and
// people, that whether everyone's approval completes the approval depends
// only on who approved, never on the order: it completes exactly when the
// approvers can fill every slot one each (the refusals along the way are
// role_filled for people who cannot add a slot).
func TestApplyMatchingOrderFree(t *testing.T) {
	roles := []string{"cfo", "controller", "finance_manager"}
	rng := rand.New(rand.NewPCG(1, 2)) // fixed: the same cases on every run
	subset := func() []string {
		var out []string
		for len(out) == 0 {
			for _, r := range roles {
				if rng.IntN(2) == 0 {
					out = append(out, r)
				}
			}
		}
		return out
	}
	yes, no := 0, 0
	defer func() { t.Logf("complete %d, incomplete %d", yes, no) }()
	cases := 120
	if testing.Short() {
		cases = 20
	}
	for n := range cases {
		var req rules.Requirement
		req.Policy = rules.DualApproval
		for range 1 + rng.IntN(3) {
			req.Slots = append(req.Slots, subset())
		}
		var people []person
		var held [][]string
		for i := range 1 + rng.IntN(4) {
			p := person{id: fmt.Sprintf("p%d@corp.example", i), roles: subset()}
			people = append(people, p)
			held = append(held, p.roles)
		}
		want := perfectMatching(req.Slots, held)
		if want {
			yes++
		} else {
			no++
		}
		ps := principals(t, people)
		for _, order := range permutations(len(people)) {
			a := pending(req)
			at := now
			for _, i := range order {
				if a.Status != pendingS {
					break
				}
				at = at.Add(time.Second)
				_, ref := approvals.Apply(a, signed(people[i].id, approvals.Approve, at), ps, at)
				if ref != nil && ref.Code != approvals.RefuseRoleFilled && ref.Code != approvals.RefuseWrongRole {
					t.Fatalf("case %d %v, people %v, order %v: unexpected refusal %v", n, req.Slots, held, order, ref)
				}
			}
			if got := a.Status == approvedS; got != want {
				t.Fatalf("case %d: slots %v, people %v, order %v: approved=%v, want %v (decisions %+v)",
					n, req.Slots, held, order, got, want, a.Decisions)
			}
			if want {
				assertDistinctSlots(t, a)
			}
		}
	}
}

func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}
