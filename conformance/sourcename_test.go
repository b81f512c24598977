package conformance

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// failing is a script whose error has a frame of f on line 2.
const failing = "function f() {\n  null.x\n}\nf()"

// stackOf requires a *JsError with a stack and returns the stack.
func stackOf(t *testing.T, err error) string {
	t.Helper()
	je, ok := err.(*kafig.JsError)
	require.True(t, ok, "want a *JsError, got %T: %v", err, err)
	require.NotNil(t, je.Stack, "the JsError has a stack")
	return *je.Stack
}

// TestSourceName: WithSourceName names a script in its stacks and
// SyntaxErrors, for Eval and for Compile's bytecode; the default is <eval>.
func TestSourceName(t *testing.T) {
	named := kafig.WithSourceName("rules/discount.js")
	runCases(t, []tcase{
		{name: "default-is-eval", src: failing, check: all(isJsError("TypeError", ""), hasStack("at f (<eval>:2:"))},
		{name: "eval", run: func(t *testing.T, c *cctx) {
			_, err := c.eval(failing, named)
			s := stackOf(t, err)
			assert.Contains(t, s, "at f (rules/discount.js:2:")
			// the script's top-level code is a function QuickJS names <eval>
			assert.Contains(t, s, "at <eval> (rules/discount.js:4:")
			assert.NotContains(t, s, "(<eval>:")
		}},
		{name: "eval-async", run: func(t *testing.T, c *cctx) {
			_, err := c.eval("await 0;\n"+failing, named, kafig.WithAsync())
			assert.Contains(t, stackOf(t, err), "at f (rules/discount.js:3:")
		}},
		{name: "next-eval-is-eval-again", run: func(t *testing.T, c *cctx) {
			// the same source, so the guest's compile cache must tell them apart
			for range 2 {
				_, err := c.eval(failing, named)
				assert.Contains(t, stackOf(t, err), "at f (rules/discount.js:2:")
				_, err = c.eval(failing)
				assert.Contains(t, stackOf(t, err), "at f (<eval>:2:")
				_, err = c.eval(failing, kafig.WithSourceName("other.js"))
				assert.Contains(t, stackOf(t, err), "at f (other.js:2:")
			}
		}},
		{name: "syntax-error", run: func(t *testing.T, c *cctx) {
			_, err := c.eval("let a = 1;\nlet b = (;", named)
			isJsError("SyntaxError", "")(t, c, nil, err)
			assert.Contains(t, stackOf(t, err), "rules/discount.js:2:")
			_, err = c.eval("let b = (;")
			isJsError("SyntaxError", "")(t, c, nil, err)
			assert.Contains(t, stackOf(t, err), "<eval>:1:")
		}},
		{name: "functions-keep-their-name", run: func(t *testing.T, c *cctx) {
			c.mustEval("function g() {\n  throw new Error('boom')\n}", kafig.WithSourceName("lib.js"))
			_, err := c.eval("\ng()", named)
			s := stackOf(t, err)
			assert.Contains(t, s, "at g (lib.js:2:")
			assert.Contains(t, s, "rules/discount.js:2:")
		}},
		{name: "dispatch-shows-the-handler-source", run: func(t *testing.T, c *cctx) {
			c.mustEval("host.on('ev', () => {\n  null.x\n})", kafig.WithSourceName("handlers.js"))
			_, err := c.bounded(0, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.DispatchEvent(ctx, "ev", nil, named)
			})
			s := stackOf(t, err)
			assert.Contains(t, s, "handlers.js:2:")
			assert.NotContains(t, s, "rules/discount.js")
		}},
		{name: "unicode-and-spaces", run: func(t *testing.T, c *cctx) {
			_, err := c.eval(failing, kafig.WithSourceName("règles/é 😀.js"))
			assert.Contains(t, stackOf(t, err), "at f (règles/é 😀.js:2:")
		}},
		{name: "longest-name", run: func(t *testing.T, c *cctx) {
			name := strings.Repeat("n", kafig.MaxSourceNameLen)
			_, err := c.eval(failing, kafig.WithSourceName(name))
			assert.Contains(t, stackOf(t, err), "at f ("+name+":2:")
		}},
		{name: "explicit-default", run: func(t *testing.T, c *cctx) {
			_, err := c.eval(failing, kafig.WithSourceName(kafig.DefaultSourceName))
			assert.Contains(t, stackOf(t, err), "at f (<eval>:2:")
		}},
		{name: "large-source", run: func(t *testing.T, c *cctx) {
			// a source that does not fit the exchange data area
			src := "/*" + strings.Repeat("x", 100_000) + "*/\n" + failing
			_, err := c.eval(src, named)
			assert.Contains(t, stackOf(t, err), "at f (rules/discount.js:3:")
		}},
		{name: "compile", run: func(t *testing.T, c *cctx) {
			bc, err := c.rt.Compile(t.Context(), failing, named)
			require.NoError(t, err)
			_, err = c.evalCompiled(bc)
			assert.Contains(t, stackOf(t, err), "at f (rules/discount.js:2:")
			// the bytecode keeps its name: another name at EvalCompiled is not used
			_, err = c.evalCompiled(bc, kafig.WithSourceName("ignored.js"))
			assert.Contains(t, stackOf(t, err), "at f (rules/discount.js:2:")
			// in another instance too
			other := c.newInstance(nil)
			_, err = other.EvalCompiled(t.Context(), bc)
			assert.Contains(t, stackOf(t, err), "at f (rules/discount.js:2:")
			// and an eval after it is <eval>
			_, err = c.eval(failing)
			assert.Contains(t, stackOf(t, err), "at f (<eval>:2:")
		}},
		{name: "compile-default-and-next", run: func(t *testing.T, c *cctx) {
			_, err := c.rt.Compile(t.Context(), failing, named)
			require.NoError(t, err)
			bc, err := c.rt.Compile(t.Context(), failing)
			require.NoError(t, err)
			_, err = c.evalCompiled(bc)
			assert.Contains(t, stackOf(t, err), "at f (<eval>:2:")
		}},
		{name: "compile-syntax-error", run: func(t *testing.T, c *cctx) {
			_, err := c.rt.Compile(t.Context(), "\n\n)", named)
			isJsError("SyntaxError", "")(t, c, nil, err)
			assert.Contains(t, stackOf(t, err), "rules/discount.js:3:")
		}},
		{name: "one-option-for-both", run: func(t *testing.T, c *cctx) {
			var o kafig.SourceOption = named
			bc, err := c.rt.Compile(t.Context(), failing, o)
			require.NoError(t, err)
			_, err = c.evalCompiled(bc)
			a := stackOf(t, err)
			_, err = c.eval(failing, o)
			assert.Equal(t, a, stackOf(t, err))
		}},
		{name: "invalid-names", run: func(t *testing.T, c *cctx) {
			for _, name := range []string{"", "a\x00b", "\xff.js", strings.Repeat("n", kafig.MaxSourceNameLen+1)} {
				o := kafig.WithSourceName(name)
				_, err := c.eval("1", o)
				assert.ErrorIs(t, err, kafig.ErrInvalidOption, "Eval %q", name)
				_, err = c.rt.Compile(t.Context(), "1", o)
				assert.ErrorIs(t, err, kafig.ErrInvalidOption, "Compile %q", name)
				_, err = c.evalCompiled(c.compile("1"), o)
				assert.ErrorIs(t, err, kafig.ErrInvalidOption, "EvalCompiled %q", name)
				_, err = c.inst.DispatchEvent(t.Context(), "ev", nil, o)
				assert.ErrorIs(t, err, kafig.ErrInvalidOption, "DispatchEvent %q", name)
			}
			// nothing reached the guest: the next eval is <eval>
			_, err := c.eval(failing)
			assert.Contains(t, stackOf(t, err), "at f (<eval>:2:")
		}},
		{name: "prelude-is-eval", rtOpts: []kafig.Option{kafig.WithPrelude("function p() {\n  null.x\n}")}, run: func(t *testing.T, c *cctx) {
			_, err := c.eval("p()", named)
			s := stackOf(t, err)
			assert.Contains(t, s, "at p (<eval>:2:")
			assert.Contains(t, s, "rules/discount.js:1:")
		}},
	})
}
