package erpmock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"time"

	"github.com/uapk-gateway/uapk-proxy/examples/internal/mockhttp"
)

// Decimal is an amount as a decimal string, e.g. "1250.00". On input it also
// accepts a JSON number, kept as its literal text; exponents are refused.
type Decimal string

var decimalRE = regexp.MustCompile(`^-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,6})?$`)

func (d *Decimal) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	if !decimalRE.MatchString(s) {
		return fmt.Errorf("%s is not a decimal amount such as \"1250.00\"", b)
	}
	*d = Decimal(s)
	return nil
}

// JournalEntry is a general-ledger posting.
type JournalEntry struct {
	ID          string        `json:"id"`
	Status      string        `json:"status"`
	Date        string        `json:"date,omitempty"` // YYYY-MM-DD
	Description string        `json:"description,omitempty"`
	Reference   string        `json:"reference,omitempty"`
	Currency    string        `json:"currency"`
	Account     string        `json:"account,omitempty"`
	Amount      Decimal       `json:"amount,omitempty"`
	Debit       Decimal       `json:"debit,omitempty"`
	Credit      Decimal       `json:"credit,omitempty"`
	Lines       []JournalLine `json:"lines,omitempty"`
	Version     int           `json:"version"`
	CreatedAt   time.Time     `json:"created_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
}

// JournalLine is one debit or credit of a journal entry.
type JournalLine struct {
	Account string  `json:"account"`
	Debit   Decimal `json:"debit,omitempty"`
	Credit  Decimal `json:"credit,omitempty"`
	Amount  Decimal `json:"amount,omitempty"`
	Memo    string  `json:"memo,omitempty"`
}

// Report is a financial statement or filing being prepared.
type Report struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Status    string    `json:"status"`
	Period    string    `json:"period,omitempty"`
	Entity    string    `json:"entity,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Reconciliation matches an account against an external statement.
type Reconciliation struct {
	ID               string    `json:"id"`
	Status           string    `json:"status"`
	Account          string    `json:"account,omitempty"`
	Period           string    `json:"period,omitempty"`
	StatementBalance Decimal   `json:"statement_balance,omitempty"`
	LedgerBalance    Decimal   `json:"ledger_balance"`
	Difference       Decimal   `json:"difference"`
	CreatedAt        time.Time `json:"created_at"`
}

// Account is an entry of the chart of accounts.
type Account struct {
	Account  string    `json:"account"`
	Name     string    `json:"name,omitempty"`
	Currency string    `json:"currency"`
	Balance  Decimal   `json:"balance"`
	AsOf     time.Time `json:"as_of"`
}

type store struct {
	entries  map[string]*JournalEntry
	reports  map[string]*Report
	recs     map[string]*Reconciliation
	accounts map[string]Account
	lastID   map[string]int // per prefix: "JE", "RPT", "REC"
}

func newStore() store {
	st := store{
		entries:  map[string]*JournalEntry{},
		reports:  map[string]*Report{},
		recs:     map[string]*Reconciliation{},
		accounts: map[string]Account{},
		lastID:   map[string]int{},
	}
	for _, a := range []struct{ id, name, bal string }{
		{"1000", "Cash - Operating", "1250000.00"},
		{"1100", "Accounts Receivable", "342150.75"},
		{"1200", "Inventory", "89000.00"},
		{"2000", "Accounts Payable", "127430.10"},
		{"3000", "Retained Earnings", "2000000.00"},
		{"4000", "Revenue", "5431200.00"},
		{"5000", "Cost of Goods Sold", "2310450.25"},
		{"6000", "Operating Expenses", "845300.00"},
	} {
		st.accounts[a.id] = Account{Account: a.id, Name: a.name, Currency: "USD", Balance: Decimal(a.bal)}
	}
	return st
}

// newID must be called with s.mu held.
func (st *store) newID(prefix string) string {
	st.lastID[prefix]++
	return fmt.Sprintf("%s-%06d", prefix, st.lastID[prefix])
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("POST /api/v1/journal-entries", s.createEntry)
	m.HandleFunc("GET /api/v1/journal-entries/{id}", s.getEntry)
	m.HandleFunc("PUT /api/v1/journal-entries/{id}", s.putEntry)
	m.HandleFunc("POST /api/v1/reports/{kind}", s.createReport)
	m.HandleFunc("POST /api/v1/reconciliations", s.createReconciliation)
	m.HandleFunc("GET /api/v1/reconciliations/{id}", s.getReconciliation)
	m.HandleFunc("GET /api/v1/accounts/{id}/balance", s.getBalance)
	m.HandleFunc("GET /api/v1/payroll/export", s.payrollExport)

	m.HandleFunc("PUT /api/v1/audit-log/{id}", s.forbidden("modified"))
	m.HandleFunc("PATCH /api/v1/audit-log/{id}", s.forbidden("modified"))
	m.HandleFunc("DELETE /api/v1/audit-log/{id...}", s.forbidden("deleted"))
	m.HandleFunc("DELETE /api/v1/records/{id...}", s.forbidden("destroyed"))

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no route for "+r.Method+" "+r.URL.Path)
	})
}

var (
	idRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
)

func (s *Server) createEntry(w http.ResponseWriter, r *http.Request) {
	var e JournalEntry
	if !decodeBody(w, r, &e, false) || !validEntry(w, &e) {
		return
	}
	now := time.Now().UTC()
	s.mu.Lock()
	e.ID = s.store.newID("JE")
	e.Status, e.Version, e.CreatedAt, e.UpdatedAt = "posted", 1, now, now
	s.store.entries[e.ID] = &e
	out := e
	s.mu.Unlock()
	w.Header().Set("Location", "/api/v1/journal-entries/"+out.ID)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) getEntry(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	e, ok := s.store.entries[r.PathValue("id")]
	var out JournalEntry
	if ok {
		out = *e
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no journal entry "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// putEntry replaces the entry, or creates it under the given id: an agent
// correcting an entry posted elsewhere is a normal ERP flow.
func (s *Server) putEntry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !idRE.MatchString(id) {
		writeError(w, http.StatusBadRequest, "invalid_field", "id: not a valid identifier")
		return
	}
	var e JournalEntry
	if !decodeBody(w, r, &e, false) || !validEntry(w, &e) {
		return
	}
	if e.ID != "" && e.ID != id {
		writeError(w, http.StatusBadRequest, "invalid_field", "id: body says "+e.ID+", URL says "+id)
		return
	}
	now := time.Now().UTC()
	s.mu.Lock()
	e.ID, e.Status, e.Version, e.CreatedAt, e.UpdatedAt = id, "posted", 1, now, now
	if old, ok := s.store.entries[id]; ok {
		e.Version, e.CreatedAt = old.Version+1, old.CreatedAt
	}
	s.store.entries[id] = &e
	out := e
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func validEntry(w http.ResponseWriter, e *JournalEntry) bool {
	if e.Currency == "" {
		e.Currency = "USD"
	}
	problem := ""
	switch {
	case !currencyRE.MatchString(e.Currency):
		problem = "currency: want an ISO 4217 code such as \"USD\""
	case e.Date != "" && !isDate(e.Date):
		problem = "date: want YYYY-MM-DD"
	}
	for i, l := range e.Lines {
		if problem == "" && l.Account == "" {
			problem = fmt.Sprintf("lines[%d].account: required", i)
		}
	}
	if problem != "" {
		writeError(w, http.StatusBadRequest, "invalid_field", problem)
		return false
	}
	return true
}

func isDate(s string) bool {
	_, err := time.Parse(time.DateOnly, s)
	return err == nil
}

func (s *Server) createReport(w http.ResponseWriter, r *http.Request) {
	kind := r.PathValue("kind")
	if !idRE.MatchString(kind) {
		writeError(w, http.StatusBadRequest, "invalid_field", "kind: want e.g. 10-K, 10-Q, balance-sheet")
		return
	}
	var rep Report
	if !decodeBody(w, r, &rep, true) {
		return
	}
	s.mu.Lock()
	rep.ID = s.store.newID("RPT")
	rep.Kind, rep.Status, rep.CreatedAt = kind, "draft", time.Now().UTC()
	s.store.reports[rep.ID] = &rep
	out := rep
	s.mu.Unlock()
	w.Header().Set("Location", "/api/v1/reports/"+kind+"/"+out.ID)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) createReconciliation(w http.ResponseWriter, r *http.Request) {
	var rec Reconciliation
	if !decodeBody(w, r, &rec, false) {
		return
	}
	if rec.Account != "" && !idRE.MatchString(rec.Account) {
		writeError(w, http.StatusBadRequest, "invalid_field", "account: not a valid account id")
		return
	}
	s.mu.Lock()
	rec.ID = s.store.newID("REC")
	rec.Status, rec.Difference, rec.CreatedAt = "reconciled", "0.00", time.Now().UTC()
	rec.LedgerBalance = rec.StatementBalance
	if rec.LedgerBalance == "" {
		rec.LedgerBalance = s.store.balance(rec.Account).Balance
	}
	s.store.recs[rec.ID] = &rec
	out := rec
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getReconciliation(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	rec, ok := s.store.recs[r.PathValue("id")]
	var out Reconciliation
	if ok {
		out = *rec
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no reconciliation "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// balance must be called with s.mu held. Accounts outside the seeded chart
// exist with a zero balance.
func (st *store) balance(id string) Account {
	a, ok := st.accounts[id]
	if !ok {
		a = Account{Account: id, Currency: "USD", Balance: "0.00"}
	}
	a.AsOf = time.Now().UTC()
	return a
}

func (s *Server) getBalance(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !idRE.MatchString(id) {
		writeError(w, http.StatusNotFound, "not_found", "no account "+id)
		return
	}
	s.mu.Lock()
	a := s.store.balance(id)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) payrollExport(w http.ResponseWriter, r *http.Request) {
	type employee struct {
		ID    string  `json:"employee_id"`
		Name  string  `json:"name"`
		SSN   string  `json:"ssn"`
		Gross Decimal `json:"gross"`
		Net   Decimal `json:"net"`
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"period":   "2025-01",
		"currency": "USD",
		"employees": []employee{
			{"E-1001", "Ada Lovelace", "***-**-1815", "12500.00", "8931.40"},
			{"E-1002", "Grace Hopper", "***-**-1906", "11800.00", "8502.15"},
		},
		"total_gross": "24300.00",
	})
}

func (s *Server) forbidden(status string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id"), "status": status})
	}
}

// decodeBody decodes one JSON object into v, answering 400 and returning
// false when the body is not one. optional allows an empty body.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_json", "reading body: "+err.Error())
		return false
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 && optional {
		return true
	}
	if len(body) == 0 || body[0] != '{' {
		writeError(w, http.StatusBadRequest, "invalid_json", "body must be a JSON object")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		code := "invalid_field" // well-formed JSON, wrong types or amount format
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) || errors.Is(err, io.ErrUnexpectedEOF) {
			code = "invalid_json"
		}
		writeError(w, http.StatusBadRequest, code, err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "invalid_json", "unexpected data after the JSON object")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) { mockhttp.WriteJSON(w, status, v) }

func writeError(w http.ResponseWriter, status int, code, msg string) {
	mockhttp.WriteError(w, status, code, msg)
}
