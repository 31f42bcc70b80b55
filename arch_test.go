// Architecture rules from DESIGN.md, checked over the whole tree: every package documents
// itself in one line, only netstack/ imports gVisor, and printerd/ never reaches the tunnel.
package printgate_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
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
		}
	}
}
