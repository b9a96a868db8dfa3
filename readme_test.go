package connpool_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// docFiles returns README.md and every page under docs/, relative to the
// repository root (the package directory).
func docFiles(t testing.TB) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	require.NoError(t, err)
	return append([]string{"README.md"}, pages...)
}

// codeBlock is a fenced ```go block of a Markdown file.
type codeBlock struct {
	file string // the Markdown file, relative to the repository root
	line int    // the line of the block's first code line, from 1
	code string
	skip string // the reason of a <!-- compile: skip (...) --> marker, or ""
}

// skipMarker marks the block whose fence follows it on the next line as
// one that needs another module, so this test cannot compile it.
var skipMarker = regexp.MustCompile(`^<!--\s*compile:\s*skip\b\s*(.*?)\s*-->$`)

// goBlocks returns the ```go blocks of the Markdown text of file. A fence
// may be indented (in a list item); the indentation is removed from the
// block's lines.
func goBlocks(file, text string) []codeBlock {
	var blocks []codeBlock
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(trimmed, "```") {
			continue
		}
		indent := lines[i][:len(lines[i])-len(strings.TrimLeft(lines[i], " \t"))]
		lang := strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))
		start := i + 1
		end := start
		for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
			end++
		}
		if lang == "go" {
			b := codeBlock{file: file, line: start + 1}
			if i > 0 {
				if m := skipMarker.FindStringSubmatch(strings.TrimSpace(lines[i-1])); m != nil {
					b.skip = m[1]
					if b.skip == "" {
						b.skip = "(no reason given)"
					}
				}
			}
			var code strings.Builder
			for _, l := range lines[start:end] {
				code.WriteString(strings.TrimPrefix(l, indent))
				code.WriteByte('\n')
			}
			b.code = code.String()
			blocks = append(blocks, b)
		}
		i = end // past the closing fence
	}
	return blocks
}

// fragmentImports are the packages a fragment may use without importing
// them. Each gets a blank use in every fragment file, so a fragment that
// does not use it still compiles.
var fragmentImports = []struct{ path, use string }{
	{"bufio", "bufio.NewReader"},
	{"context", "context.Background"},
	{"errors", "errors.New"},
	{"fmt", "fmt.Sprint"},
	{"io", "io.EOF"},
	{"log", "log.Print"},
	{"net", "net.Dial"},
	{"net/rpc", "rpc.NewClient"},
	{"strings", "strings.HasPrefix"},
	{"time", "time.Second"},
	{"github.com/seed73091bf1/connpool", "connpool.New"},
	{"github.com/seed73091bf1/connpool/balancer", "balancer.NewRoundRobin"},
	{"github.com/seed73091bf1/connpool/clientpool", "clientpool.Idempotent"},
	{"github.com/seed73091bf1/connpool/discovery", "discovery.NewDNS"},
}

// fragmentDecls are the names a fragment may use without declaring them.
// They are package-level variables, so a fragment that does not use one
// still compiles, and a fragment may declare its own with := to shadow
// one.
const fragmentDecls = `package fragments

import (
	"context"
	"net"
	"net/rpc"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

var (
	ctx  = context.Background()
	addr = "127.0.0.1:11211"
	dial connpool.Dial
	pool *connpool.Pool
	rr   balancer.Balancer
	bp   *balancer.Pool

	// dialRPC dials a net/rpc client, as a clientpool dial function does.
	dialRPC func(ctx context.Context, addr string) (*rpc.Client, error)
	// roundTrip writes a request on c and reads the whole reply.
	roundTrip func(c net.Conn, request string) (string, error)
)
`

// fragmentFile wraps a fragment in a function body that returns an error,
// so fragments may "return err". The //line directive makes the compiler
// report errors at the fragment's place in the Markdown file.
func fragmentFile(n int, b codeBlock, root string) string {
	var f strings.Builder
	f.WriteString("package fragments\n\nimport (\n")
	for _, imp := range fragmentImports {
		fmt.Fprintf(&f, "\t%q\n", imp.path)
	}
	f.WriteString(")\n\nvar (\n")
	for _, imp := range fragmentImports {
		fmt.Fprintf(&f, "\t_ = %s\n", imp.use)
	}
	fmt.Fprintf(&f, ")\n\nfunc fragment%d() error {\n", n)
	fmt.Fprintf(&f, "//line %s:%d\n", filepath.Join(root, b.file), b.line)
	f.WriteString(b.code)
	f.WriteString("\n\treturn nil\n}\n")
	return f.String()
}

// TestDocCodeBlocksCompile checks that every ```go block of README.md and
// docs/*.md compiles (and passes go vet) against this module. A block that
// starts with "package" is a file of its own; any other block is a
// fragment, compiled inside a function with the declarations of
// fragmentDecls. Blocks that need another module are marked on the line
// before their fence with <!-- compile: skip (reason) -->.
func TestDocCodeBlocksCompile(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not on PATH:", err)
	}
	root, err := os.Getwd()
	require.NoError(t, err)

	var blocks []codeBlock
	for _, file := range docFiles(t) {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		blocks = append(blocks, goBlocks(filepath.ToSlash(file), string(text))...)
	}
	require.NotEmpty(t, blocks, "no ```go blocks found: is the parser broken?")

	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	write("go.mod", fmt.Sprintf(`module doccheck

go 1.25

require github.com/seed73091bf1/connpool v0.0.0

replace github.com/seed73091bf1/connpool => %s
`, filepath.ToSlash(root)))
	sum, err := os.ReadFile("go.sum")
	require.NoError(t, err)
	write("go.sum", string(sum))
	write("fragments/decls.go", fragmentDecls)

	var files, fragments, skipped int
	for i, b := range blocks {
		switch {
		case b.skip != "":
			skipped++
			t.Logf("%s:%d: skipped %s", b.file, b.line, b.skip)
		case strings.HasPrefix(strings.TrimSpace(b.code), "package "):
			files++
			write(fmt.Sprintf("file%d/main.go", i), fmt.Sprintf("//line %s:%d\n%s", filepath.Join(root, b.file), b.line, b.code))
		default:
			fragments++
			write(fmt.Sprintf("fragments/fragment%d.go", i), fragmentFile(i, b, root))
		}
	}
	t.Logf("%d go blocks: %d files, %d fragments, %d skipped", len(blocks), files, fragments, skipped)

	cmd := exec.Command(goTool, "vet", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GOFLAGS=-mod=mod", // record the replaced module's requirements
		"GOPROXY=off",      // offline: everything comes from the module cache
		"GOWORK=off",
		"GOTOOLCHAIN=local",
	)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "go vet of the documentation's code blocks failed:\n%s", out)
}

// mdLink matches a Markdown link or image: [text](target) or ![alt](target).
var mdLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// inlineCode matches a code span, whose brackets are not links.
var inlineCode = regexp.MustCompile("`[^`]*`")

// headingAnchor returns the anchor GitHub gives a heading's text.
func headingAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127 && !strings.ContainsRune("×–—…’“”·", r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdAnchors returns the anchors of the headings of a Markdown text.
func mdAnchors(text string) map[string]bool {
	anchors := make(map[string]bool)
	inFence := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(l, "#") {
			continue
		}
		a := headingAnchor(strings.TrimLeft(l, "#"))
		for n := 1; anchors[a]; n++ { // GitHub numbers repeated headings
			a = fmt.Sprintf("%s-%d", headingAnchor(strings.TrimLeft(l, "#")), n)
		}
		anchors[a] = true
	}
	return anchors
}

// TestDocLinksResolve checks that every relative link of README.md and
// docs/*.md points to a file or directory that exists, and that a link to
// a heading of a Markdown file names a heading that exists.
func TestDocLinksResolve(t *testing.T) {
	var checked int
	for _, file := range docFiles(t) {
		text, err := os.ReadFile(file)
		require.NoError(t, err)
		// Blank out fenced blocks and code spans, keeping line breaks, so
		// that link text may span lines and line numbers stay right.
		lines := strings.Split(string(text), "\n")
		inFence := false
		for n, l := range lines {
			fence := strings.HasPrefix(strings.TrimSpace(l), "```")
			if fence || inFence {
				lines[n] = ""
			}
			if fence {
				inFence = !inFence
			}
		}
		prose := inlineCode.ReplaceAllStringFunc(strings.Join(lines, "\n"), func(s string) string {
			return strings.Repeat("\n", strings.Count(s, "\n"))
		})
		for _, m := range mdLink.FindAllStringSubmatchIndex(prose, -1) {
			target := prose[m[2]:m[3]]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			where := fmt.Sprintf("%s:%d: link %q", file, strings.Count(prose[:m[0]], "\n")+1, target)
			path, anchor, _ := strings.Cut(target, "#")
			resolved := file
			if path != "" {
				resolved = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				if _, err := os.Stat(resolved); err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(resolved, ".md") {
				target, err := os.ReadFile(resolved)
				if assert.NoError(t, err, where) {
					assert.True(t, mdAnchors(string(target))[anchor], "%s: no heading with anchor #%s in %s", where, anchor, resolved)
				}
			}
		}
	}
	t.Logf("%d relative links checked", checked)
}
