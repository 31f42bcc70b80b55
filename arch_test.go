// Architecture rules from DESIGN.md, checked over the whole tree: every package documents
// itself in one line, only netstack/ imports gVisor, printerd/ never reaches the tunnel, and
// the control protocol (enroll/control) stands on the roster's types alone, and the laptop
// client (cmd/printgate/connect) never pulls in the gateway daemon.
package printgate_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/printgate/printgate"

type goPackage struct {
	dir     string
	name    string
	doc     bool
	imports map[string][]string // import path -> files
}

func loadPackages(t *testing.T) map[string]*goPackage {
	t.Helper()
	pkgs := map[string]*goPackage{}
	fset := token.NewFileSet()
	// The walk reads files, not modules: deploy/, a module of its own, is checked too.
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "out" || name == "dist") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		if hasBuildIgnore(f) {
			return nil
		}
		dir := filepath.Dir(path)
		p := pkgs[dir]
		if p == nil {
			p = &goPackage{dir: dir, imports: map[string][]string{}}
			pkgs[dir] = p
		}
		if !strings.HasSuffix(path, "_test.go") {
			p.name = f.Name.Name
			if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
				p.doc = true
			}
		}
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			p.imports[ip] = append(p.imports[ip], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func hasBuildIgnore(f *ast.File) bool {
	for _, cg := range f.Comments {
		if cg.Pos() > f.Package {
			break
		}
		for _, c := range cg.List {
			if strings.HasPrefix(c.Text, "//go:build") && strings.Contains(c.Text, "ignore") {
				return true
			}
		}
	}
	return false
}

func TestEveryPackageHasDoc(t *testing.T) {
	for dir, p := range loadPackages(t) {
		if p.name == "" {
			continue // test-only package
		}
		if !p.doc {
			t.Errorf("package %s (%s) has no package doc comment", p.name, dir)
		}
	}
}

func TestImportRules(t *testing.T) {
	under := func(dir, top string) bool {
		return dir == top || strings.HasPrefix(dir, top+string(filepath.Separator))
	}
	for dir, p := range loadPackages(t) {
		for ip, files := range p.imports {
			if strings.HasPrefix(ip, "gvisor.dev/") && !under(dir, "netstack") && !under(dir, filepath.Join("bench", "throughput")) {
				t.Errorf("%s imports %s: only netstack/ may import gVisor", files[0], ip)
			}
			if under(dir, "printerd") && (ip == module+"/tunnel" || strings.HasPrefix(ip, module+"/tunnel/") || ip == module+"/netstack") {
				t.Errorf("%s imports %s: printerd/ must not know the tunnel", files[0], ip)
			}
			// connect is a client: it never runs the gateway daemon.
			if under(dir, filepath.Join("cmd", "printgate", "connect")) && !strings.HasSuffix(files[0], "_test.go") && ip == module+"/cmd/printgate/gateway" {
				t.Errorf("%s imports %s: printgate connect is a client, not the gateway", files[0], ip)
			}
			// mesh/ is the roster engine: it sees a listener and a dial function, never the
			// stack under them or the printers.
			if under(dir, "mesh") && (strings.HasPrefix(ip, module+"/printerd") || ip == module+"/netstack") {
				t.Errorf("%s imports %s: mesh/ must not know printers or the netstack", files[0], ip)
			}
			// tunnel/tunneltest is test support: it may serve HTTP over the pair it builds.
			knowsHTTP := ip == "net/http" && !strings.HasSuffix(files[0], "_test.go") && !under(dir, filepath.Join("tunnel", "tunneltest"))
			if (under(dir, "tunnel") || under(dir, "netstack")) && (strings.HasPrefix(ip, module+"/printerd") || knowsHTTP) {
				t.Errorf("%s imports %s: tunnel/ and netstack/ must not know HTTP or printers", files[0], ip)
			}
			// The control protocol (enroll/control) is spoken by the CLI, the daemon, and later
			// other gateways and `printgate connect`: it depends on the roster's types only.
			if dir == filepath.Join("enroll", "control") && strings.HasPrefix(ip, module+"/") && ip != module+"/enroll" {
				t.Errorf("%s imports %s: enroll/control may import only enroll", files[0], ip)
			}
			if under(dir, "printerd") && ip == module+"/enroll/control" {
				t.Errorf("%s imports %s: printerd/ does not speak the daemon's control protocol", files[0], ip)
			}
			// Crash-safe writes sit under everything that keeps state: they import nothing of ours.
			if dir == filepath.Join("enroll", "statefile") && strings.HasPrefix(ip, module+"/") {
				t.Errorf("%s imports %s: enroll/statefile stands alone", files[0], ip)
			}
		}
	}
}

// TestFileSizes: no non-test file over 600 lines, except where one concern honestly needs
// more (named here with the concern), so that each file can be read in one sitting.
func TestFileSizes(t *testing.T) {
	const limit = 600
	allowed := map[string]string{
		"printerd/api_octoprint.go":   "the OctoPrint face (being split by the printerd-split work)",
		"printerd/marlin/protocol.go": "Marlin's line protocol: numbering, checksums, resends, ok accounting",
		"printerd/marlin/session.go":  "one link session's loop and its state",
		"printerd/marlinsim/fw.go":    "the simulated firmware's G-code interpreter",
		"printerd/files/files.go":     "the file store: paths, uploads, metadata",
	}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if n := bytes.Count(b, []byte("\n")); n > limit {
			if _, ok := allowed[filepath.ToSlash(path)]; !ok {
				t.Errorf("%s has %d lines (> %d): split it by stage, or name its one concern in TestFileSizes", path, n, limit)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
