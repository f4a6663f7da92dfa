package fleet

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The wire vectors in testdata/wire are shared with clients in other
// languages (see testdata/wire/README.md): these tests check the Go
// implementation builds and parses exactly what they say.

func readVectors(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "wire", name))
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

type subjectVectors struct {
	MachineIDs []struct {
		Name, ID, Token, Error string
	} `json:"machine_ids"`
	Build []struct {
		Name, Func string
		Args       []string
		Want       string
	} `json:"build"`
	Parse []struct {
		Name, Func string
		Args       []string
		Want       map[string]string
		Error      string
	} `json:"parse"`
	Sessions sessionVectors `json:"sessions"`
}

func TestWireMachineIDs(t *testing.T) {
	var v subjectVectors
	readVectors(t, "subjects.json", &v)
	if len(v.MachineIDs) == 0 {
		t.Fatal("no machine id vectors")
	}
	for _, tt := range v.MachineIDs {
		err := ValidateMachineID(tt.ID)
		if tt.Error != "" {
			if err == nil || !strings.Contains(err.Error(), tt.Error) {
				t.Errorf("%s: ValidateMachineID(%q) = %v, want an error containing %q", tt.Name, tt.ID, err, tt.Error)
			}
			if got, err := MachineFromToken(MachineToken(tt.ID)); err == nil && got == tt.ID {
				t.Errorf("%s: the token of %q parses back to it", tt.Name, tt.ID)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: ValidateMachineID(%q): %v", tt.Name, tt.ID, err)
		}
		if got := MachineToken(tt.ID); got != tt.Token {
			t.Errorf("%s: MachineToken(%q) = %q, want %q", tt.Name, tt.ID, got, tt.Token)
		}
		if got, err := MachineFromToken(tt.Token); err != nil || got != tt.ID {
			t.Errorf("%s: MachineFromToken(%q) = (%q, %v), want %q", tt.Name, tt.Token, got, err, tt.ID)
		}
	}
}

// wireBuilders are the builders the subject vectors name.
var wireBuilders = map[string]func(a []string) (string, error){
	"FnSubject":               func(a []string) (string, error) { return FnSubject(a[0], a[1], a[2]), nil },
	"AllSubject":              func(a []string) (string, error) { return AllSubject(a[0], a[1]), nil },
	"CtlSubject":              func(a []string) (string, error) { return CtlSubject(a[0], a[1]), nil },
	"PresenceEventSubject":    func(a []string) (string, error) { return PresenceEventSubject(a[0], a[1]), nil },
	"PresenceSnapshotSubject": func([]string) (string, error) { return PresenceSnapshotSubject, nil },
	"AgentHintSubject":        func([]string) (string, error) { return AgentHintSubject, nil },
	"OperatorInbox":           func(a []string) (string, error) { return OperatorInbox(a[0]), nil },
	"CallReply": func(a []string) (string, error) {
		n, err := strconv.Atoi(a[3])
		return CallReply(a[0], a[1], a[2], n), err
	},
	"CallReplies":           func(a []string) (string, error) { return CallReplies(a[0], a[1]), nil },
	"DirectInbox":           func(a []string) (string, error) { return DirectInbox(a[0], a[1]), nil },
	"DiscoveryInbox":        func(a []string) (string, error) { return DiscoveryInbox(a[0]), nil },
	"MachineDiscoveryInbox": func(a []string) (string, error) { return MachineDiscoveryInbox(a[0], a[1]), nil },
	"ControlInbox":          func(a []string) (string, error) { return ControlInbox(a[0]), nil },
	"SiteSysSubject":        func(a []string) (string, error) { return SiteSysSubject(a[0], a[1]), nil },
	"SiteAuthSubject":       func(a []string) (string, error) { return SiteAuthSubject(a[0]), nil },
	"AccountConnectSubject": func(a []string) (string, error) { return AccountConnectSubject(a[0]), nil },
	"ServerRequestSubject":  func(a []string) (string, error) { return ServerRequestSubject(a[0], a[1]), nil },
}

func TestWireSubjectBuilders(t *testing.T) {
	var v subjectVectors
	readVectors(t, "subjects.json", &v)
	for _, tt := range v.Build {
		b := wireBuilders[tt.Func]
		if b == nil {
			t.Errorf("%s: no builder %q in this test", tt.Name, tt.Func)
			continue
		}
		got, err := b(tt.Args)
		if err != nil || got != tt.Want {
			t.Errorf("%s: %s(%q) = (%q, %v), want %q", tt.Name, tt.Func, tt.Args, got, err, tt.Want)
		}
	}
}

// wireParsers are the parsers the subject vectors name, each result as
// the vectors spell it.
var wireParsers = map[string]func(a []string) (map[string]string, error){
	"ParseFnSubject": func(a []string) (map[string]string, error) {
		c, err := ParseFnSubject(a[0])
		return map[string]string{"token": c.Token, "function": c.Function, "caller": c.Caller}, err
	},
	"ParseCallReply": func(a []string) (map[string]string, error) {
		r, err := ParseCallReply(a[0])
		return map[string]string{"caller": r.Caller, "target": r.Target, "call": r.Call, "copy": r.Copy}, err
	},
	"InboxOwner": func(a []string) (map[string]string, error) {
		owner, ok := InboxOwner(a[0])
		if !ok {
			return nil, errorString("no owner")
		}
		return map[string]string{"owner": owner}, nil
	},
	"AgentReply": func(a []string) (map[string]string, error) {
		r, err := AgentReply(a[0], a[1], a[2])
		return map[string]string{"reply": r}, err
	},
	"CallReplyFor": func(a []string) (map[string]string, error) {
		c, err := ParseFnSubject(a[0])
		if strings.HasPrefix(a[0], SessionFnRoot+".") {
			c, err = ParseSessionFnSubject(a[0])
		}
		if err != nil {
			return nil, err
		}
		r, err := CallReplyFor(c, a[1])
		return map[string]string{"caller": r.Caller, "target": r.Target, "call": r.Call, "copy": r.Copy}, err
	},
	"IsControlReply": func(a []string) (map[string]string, error) {
		return map[string]string{"ok": strconv.FormatBool(IsControlReply(a[0], a[1]))}, nil
	},
	"ParseCtlSubject": func(a []string) (map[string]string, error) {
		operator, op, err := ParseCtlSubject(a[0])
		return map[string]string{"operator": operator, "op": op}, err
	},
	"ParseSiteSysSubject": func(a []string) (map[string]string, error) {
		site, sys, err := ParseSiteSysSubject(a[0])
		return map[string]string{"site": site, "sys": sys}, err
	},
	"ParseServerEvent": func(a []string) (map[string]string, error) {
		ev, err := ParseServerEvent(a[0])
		return map[string]string{"kind": ev.Kind, "account": ev.Account, "server": ev.Server}, err
	},
}

type errorString string

func (e errorString) Error() string { return string(e) }

func TestWireSubjectParsers(t *testing.T) {
	var v subjectVectors
	readVectors(t, "subjects.json", &v)
	for _, tt := range v.Parse {
		p := wireParsers[tt.Func]
		if p == nil {
			t.Errorf("%s: no parser %q in this test", tt.Name, tt.Func)
			continue
		}
		got, err := p(tt.Args)
		if tt.Error != "" {
			if err == nil || !strings.Contains(err.Error(), tt.Error) {
				t.Errorf("%s: %s(%q) = (%v, %v), want an error containing %q", tt.Name, tt.Func, tt.Args, got, err, tt.Error)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.Want) {
			t.Errorf("%s: %s(%q) = (%v, %v), want %v", tt.Name, tt.Func, tt.Args, got, err, tt.Want)
		}
	}
}

func TestWireHeaders(t *testing.T) {
	var v struct {
		Names []struct{ Name, Want string } `json:"names"`
		// Values are constants carried in headers.
		Values []struct{ Name, Want string } `json:"values"`
		Errors []struct {
			Name, Code, Description string
			Want                    *Error
		} `json:"errors"`
		NoResponders []struct {
			Name, Status string
			BodyLen      int `json:"body_len"`
			Want         bool
		} `json:"no_responders"`
		ArgsDigests []struct{ Name, Body, Want string } `json:"args_digests"`
	}
	readVectors(t, "headers.json", &v)
	consts := map[string]string{
		"HeaderError": HeaderError, "HeaderErrorCode": HeaderErrorCode, "HeaderMachine": HeaderMachine,
		"HeaderRetryAfter": HeaderRetryAfter, "HeaderFunction": HeaderFunction, "HeaderDuration": HeaderDuration,
		"HeaderCallID": HeaderCallID, "HeaderArgs": HeaderArgs, "HeaderStatus": HeaderStatus, "HeaderDescription": HeaderDescription,
		"StatusNoResponders": StatusNoResponders, "DescriptionNoResponders": DescriptionNoResponders,
		"MaxCallIDLen": strconv.Itoa(MaxCallIDLen),
	}
	seen := map[string]bool{}
	for _, tt := range append(v.Names, v.Values...) {
		seen[tt.Name] = true
		if got, ok := consts[tt.Name]; !ok || got != tt.Want {
			t.Errorf("%s = %q (known %v), want %q", tt.Name, got, ok, tt.Want)
		}
	}
	for name := range consts {
		if !seen[name] {
			t.Errorf("%s has no vector in headers.json", name)
		}
	}
	for _, tt := range v.Errors {
		got := ErrorFromHeader(tt.Code, tt.Description)
		if !reflect.DeepEqual(got, tt.Want) {
			t.Errorf("%s: ErrorFromHeader(%q, %q) = %+v, want %+v", tt.Name, tt.Code, tt.Description, got, tt.Want)
		}
	}
	if len(v.ArgsDigests) == 0 {
		t.Error("headers.json has no args_digests")
	}
	for _, tt := range v.ArgsDigests {
		if got := ArgsDigest([]byte(tt.Body)); got != tt.Want {
			t.Errorf("%s: ArgsDigest(%q) = %q, want %q", tt.Name, tt.Body, got, tt.Want)
		}
	}
	for _, tt := range v.NoResponders {
		if got := IsNoResponders(tt.Status, tt.BodyLen); got != tt.Want {
			t.Errorf("%s: IsNoResponders(%q, %d) = %v, want %v", tt.Name, tt.Status, tt.BodyLen, got, tt.Want)
		}
	}
}

// wireTypes are the message types the vectors hold an example of.
var wireTypes = map[string]func() any{
	"Machine": func() any { return new(Machine) }, "Pending": func() any { return new(Pending) },
	"PendingKey": func() any { return new(PendingKey) }, "Operator": func() any { return new(Operator) },
	"Server": func() any { return new(Server) }, "PresenceSnapshot": func() any { return new(PresenceSnapshot) },
	"PresenceEvent": func() any { return new(PresenceEvent) }, "WhoAmI": func() any { return new(WhoAmI) },
	"MachineRequest": func() any { return new(MachineRequest) }, "MachineChange": func() any { return new(MachineChange) },
	"ListRequest": func() any { return new(ListRequest) }, "ListPage": func() any { return new(ListPage) },
	"MachineList": func() any { return new(MachineList) }, "PendingList": func() any { return new(PendingList) },
	"RemoveResult": func() any { return new(RemoveResult) }, "OperatorRequest": func() any { return new(OperatorRequest) },
	"OperatorList": func() any { return new(OperatorList) }, "MachineImport": func() any { return new(MachineImport) },
	"ImportResult": func() any { return new(ImportResult) }, "AgentHint": func() any { return new(AgentHint) },
	"AuditRequest": func() any { return new(AuditRequest) }, "AuditList": func() any { return new(AuditList) },
	"AuditRecord": func() any { return new(AuditRecord) }, "AuditCut": func() any { return new(AuditCut) },
	"AuditOutcome": func() any { return new(AuditOutcome) }, "Error": func() any { return new(Error) },
	"App": func() any { return new(App) }, "AppRequest": func() any { return new(AppRequest) },
	"AppCreated": func() any { return new(AppCreated) }, "AppRemoved": func() any { return new(AppRemoved) },
	"SessionHello": func() any { return new(SessionHello) }, "Location": func() any { return new(Location) },
	"Session": func() any { return new(Session) }, "SessionDeclared": func() any { return new(SessionDeclared) },
	"SessionQuery": func() any { return new(SessionQuery) }, "SessionSnapshot": func() any { return new(SessionSnapshot) },
	"SessionEvent": func() any { return new(SessionEvent) }, "SessionTokenClaims": func() any { return new(SessionTokenClaims) },
	"Seen": func() any { return new(Seen) }, "HistoryRequest": func() any { return new(HistoryRequest) },
	"HistoryEntry": func() any { return new(HistoryEntry) }, "HistoryPage": func() any { return new(HistoryPage) },
	"RegistryPart": func() any { return new(RegistryPart) }, "RegistryExportRequest": func() any { return new(RegistryExportRequest) },
	"RegistryExportPage": func() any { return new(RegistryExportPage) }, "RegistryImportResult": func() any { return new(RegistryImportResult) },
	"Denied": func() any { return new(Denied) }, "DenyRequest": func() any { return new(DenyRequest) },
	"DenyResult": func() any { return new(DenyResult) }, "DeniedList": func() any { return new(DeniedList) },
	"ControlVersion": func() any { return new(ControlVersion) }, "FunctionInfo": func() any { return new(FunctionInfo) },
	"FunctionArg": func() any { return new(FunctionArg) }, "SnapshotRequest": func() any { return new(SnapshotRequest) },
	"Facts": func() any { return new(Facts) },
}

// Each message type's example decodes with no unknown field, sets every
// field (so an SDK reading it checks every name), and encodes back to
// the same JSON.
func TestWireMessages(t *testing.T) {
	var v []struct {
		Name, Type string
		JSON       json.RawMessage
	}
	readVectors(t, "messages.json", &v)
	seen := map[string]bool{}
	for _, tt := range v {
		mk := wireTypes[tt.Type]
		if mk == nil {
			t.Errorf("%s: unknown type %q", tt.Name, tt.Type)
			continue
		}
		seen[tt.Type] = true
		msg := mk()
		d := json.NewDecoder(bytes.NewReader(tt.JSON))
		d.DisallowUnknownFields()
		if err := d.Decode(msg); err != nil {
			t.Errorf("%s: decode %s: %v", tt.Name, tt.Type, err)
			continue
		}
		if f := zeroField(reflect.ValueOf(msg).Elem()); f != "" {
			t.Errorf("%s: the example leaves %s.%s unset", tt.Name, tt.Type, f)
		}
		out, err := json.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var want, got any
		if err := json.Unmarshal(tt.JSON, &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %s encodes back as\n %s\nwant\n %s", tt.Name, tt.Type, out, tt.JSON)
		}
	}
	for _, name := range jsonTypes(t) {
		if !seen[name] {
			t.Errorf("message type %s has no example in messages.json", name)
		}
	}
}

// zeroField names the first field of struct v (embedded ones included)
// that holds its zero value.
func zeroField(v reflect.Value) string {
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if sf.Anonymous && f.Kind() == reflect.Struct {
			if z := zeroField(f); z != "" {
				return z
			}
			continue
		}
		if f.IsZero() {
			return sf.Name
		}
	}
	return ""
}

// jsonTypes lists the struct types of this package with JSON field tags:
// the messages of the wire.
func jsonTypes(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok || !ts.Name.IsExported() {
				return false
			}
			for _, field := range st.Fields.List {
				if field.Tag != nil && strings.Contains(field.Tag.Value, `json:"`) {
					out = append(out, ts.Name.Name)
					break
				}
			}
			return false
		})
	}
	if len(out) < 20 {
		t.Fatalf("found only %d message types: %v", len(out), out)
	}
	return out
}
