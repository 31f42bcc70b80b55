package printerd

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// maxServerMethods bounds the Server's own methods: the life cycle, the request pipeline and
// what both faces share. It had 101 before the faces got their own types, and has 20.
const maxServerMethods = 30

// TestFaceLayout pins the split by face: op* handlers are methods of octoprint, n* handlers
// of native, neither face reaches into the other, and the Server stays small.
func TestFaceLayout(t *testing.T) {
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	methods := map[string][]string{} // receiver type → method names
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil {
				continue
			}
			recv := receiverType(fd.Recv.List[0].Type)
			name := fd.Name.Name
			methods[recv] = append(methods[recv], name)
			if want := handlerFace(name); want != "" && recv != want {
				t.Errorf("%s: %s is a method of %s, want %s", fset.Position(fd.Pos()), name, recv, want)
			}
			other := map[string]string{"octoprint": "native", "native": "octoprint"}[recv]
			if other == "" {
				continue
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok && id.Name == other {
					t.Errorf("%s: %s.%s uses the %s face", fset.Position(id.Pos()), recv, name, other)
				}
				return true
			})
		}
	}
	if n := len(methods["Server"]); n > maxServerMethods {
		t.Errorf("Server has %d methods, want at most %d: %v", n, maxServerMethods, methods["Server"])
	}
	if len(methods["octoprint"]) == 0 || len(methods["native"]) == 0 {
		t.Errorf("face methods: octoprint %d, native %d; want both", len(methods["octoprint"]), len(methods["native"]))
	}
}

// receiverType is T of a receiver T or *T.
func receiverType(e ast.Expr) string {
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// handlerFace is the face a handler's name says: opX → octoprint, nX → native.
func handlerFace(name string) string {
	upperAt := func(i int) bool { return len(name) > i && unicode.IsUpper(rune(name[i])) }
	switch {
	case strings.HasPrefix(name, "op") && upperAt(2):
		return "octoprint"
	case strings.HasPrefix(name, "n") && upperAt(1):
		return "native"
	}
	return ""
}
