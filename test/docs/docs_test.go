// Package docs checks what the repository's documents claim about the
// repository itself: every test a document names as proof exists, and no
// document points outside the repository.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// root is the repository's top directory, from this package's.
const root = "../.."

// documents are the Markdown files that make claims: the README and docs/.
func documents(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	paths, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	paths = append(paths, filepath.Join(root, "README.md"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = string(b)
	}
	return out
}

// testFuncs are the names of every Test, Fuzz and Benchmark function in the
// repository's _test.go files.
func testFuncs(t *testing.T) map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)\w+)\(`)
	names := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestNamedTestsExist: a document that names a test as the proof of a
// claim names one that exists.
func TestNamedTestsExist(t *testing.T) {
	funcs := testFuncs(t)
	named := regexp.MustCompile("`((?:Test|Fuzz|Benchmark)[A-Z]\\w*)`")
	for path, text := range documents(t) {
		for _, m := range named.FindAllStringSubmatch(text, -1) {
			if !funcs[m[1]] {
				t.Errorf("%s names %s, which no _test.go defines", path, m[1])
			}
		}
	}
}

// TestNoPathOutsideTheRepository: the repository stands on its own. Its
// documents, code, configuration and test data cite no file it does not
// hold (the design notes it started from are docs/ now) and no machine's
// paths.
func TestNoPathOutsideTheRepository(t *testing.T) {
	outside := regexp.MustCompile(`\.\./shared|/work/|/home/|DESIGN\.md|PEERS\.md`)
	texts := documents(t)
	self, err := filepath.Abs("docs_test.go")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		switch filepath.Ext(p) {
		case ".go", ".yaml", ".yml", ".sh", ".md", ".tpl", ".json", ".cfg", ".conf":
		default:
			return nil
		}
		if abs, _ := filepath.Abs(p); abs == self {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		texts[p] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, text := range texts {
		for i, line := range strings.Split(text, "\n") {
			if outside.MatchString(line) {
				t.Errorf("%s:%d points outside the repository: %s", path, i+1, line)
			}
		}
	}
}

// TestScriptsStandAlone: the Makefile and everything under hack/ (scripts,
// tools, the benchmark peers' configs) run from a clone, with no path to a
// sibling checkout or to the machine they were written on.
func TestScriptsStandAlone(t *testing.T) {
	outside := regexp.MustCompile(`\.\./shared|/work/`)
	paths := []string{filepath.Join(root, "Makefile")}
	err := filepath.WalkDir(filepath.Join(root, "hack"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		switch filepath.Ext(p) {
		case ".sh", ".go", ".cfg", ".yaml", ".md":
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if outside.MatchString(line) {
				t.Errorf("%s:%d points outside the repository: %s", p, i+1, line)
			}
		}
	}
}
