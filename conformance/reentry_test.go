package conformance

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// selfRef lets a handler or callback reach the instance it was given to,
// which exists only after the options are made.
type selfRef struct{ inst *kafig.Instance }

// reentryRouter's handlers call back into their own instance.
func reentryRouter(self *selfRef, bg context.Context) *kafig.RPCRouter {
	closeWith := func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		return nil, self.inst.Close(ctx)
	}
	evalWith := func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		return self.inst.Eval(ctx, `1`)
	}
	return kafig.NewRPCRouter().
		WithSync("close", closeWith).
		WithSync("closeBg", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return closeWith(bg, nil)
		}).
		WithAsync("aclose", closeWith).
		WithSync("eval", evalWith).
		WithAsync("aeval", evalWith).
		WithSync("stats", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			_, err := self.inst.GetExecutionStats(ctx)
			return nil, err
		}).
		WithSync("dispatch", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			return self.inst.DispatchEvent(ctx, "e", nil)
		})
}

// reentrant makes an instance whose handlers call back into it.
func reentrant(t *testing.T, rt *kafig.Runtime, opts ...kafig.InstanceOption) *kafig.Instance {
	t.Helper()
	self := &selfRef{}
	inst, err := rt.Instance(t.Context(), append([]kafig.InstanceOption{kafig.WithRouter(reentryRouter(self, context.Background()))}, opts...)...)
	require.NoError(t, err)
	self.inst = inst
	t.Cleanup(func() { _ = inst.Close(context.Background()) })
	return inst
}

// TestReentry: handlers and callbacks that call back into their own
// instance (close it, evaluate in it) neither deadlock nor crash.
func TestReentry(t *testing.T) {
	closedNow := func(t *testing.T, inst *kafig.Instance) {
		t.Helper()
		_, err := inst.Eval(t.Context(), `1`)
		assert.ErrorIs(t, err, kafig.ErrClosed)
		assert.NoError(t, inst.Close(t.Context()), "Close again")
	}
	// evalIn runs src in inst, failing the case if it does not end in 10 s.
	evalIn := func(t *testing.T, inst *kafig.Instance, src string, opts ...kafig.EvalOption) (json.RawMessage, error) {
		t.Helper()
		c := &cctx{t: t, inst: inst}
		return c.evalTimeout(5*time.Second, src, opts...)
	}
	cases := []tcase{
		{name: "sync-handler-closes-its-instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			_, err := evalIn(t, inst, `host.rpcSync("close"); for (;;) {}`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
		}},
		{name: "sync-handler-closes-its-instance-background-ctx", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			_, err := evalIn(t, inst, `try { host.rpcSync("closeBg") } catch {} 1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
		}},
		{name: "sync-handler-closes-in-async-eval", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			_, err := evalIn(t, inst, `await null; host.rpcSync("close"); await new Promise(() => {})`, kafig.WithAsync())
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
		}},
		{name: "sync-handler-closes-in-dispatch", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			_, err := evalIn(t, inst, `host.on("e", () => host.rpcSync("close")); 1`)
			require.NoError(t, err)
			_, err = inst.DispatchEvent(t.Context(), "e", nil)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
		}},
		{name: "async-handler-closes-its-instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			_, err := evalIn(t, inst, `await host.rpc("aclose"); for (;;) {}`, kafig.WithAsync())
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
		}},
		{name: "interrupt-callback-closes-its-instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			self := &selfRef{}
			inst, err := c.rt.Instance(t.Context(), kafig.WithInterruptCallback(func(uint64, uint64) bool {
				_ = self.inst.Close(context.Background())
				return false
			}))
			require.NoError(t, err)
			self.inst = inst
			_, err = evalIn(t, inst, `for (;;) {}`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
		}},
		{name: "rejection-handler-closes-its-instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			self := &selfRef{}
			inst, err := c.rt.Instance(t.Context(), kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool {
				_ = self.inst.Close(context.Background())
				return false
			}))
			require.NoError(t, err)
			self.inst = inst
			_, err = evalIn(t, inst, `Promise.reject(new Error("x")); for (;;) {}`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
		}},
		{name: "sync-handler-evals-its-instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			res, err := evalIn(t, inst, `try { host.rpcSync("eval") } catch (e) { e.message }`)
			isValue(`"`+kafig.ErrReentrantCall.Error()+`"`)(t, c, res, err)
			res, err = evalIn(t, inst, `1+1`)
			isValue(`2`)(t, c, res, err)
		}},
		{name: "sync-handler-stats-and-dispatch-its-instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			res, err := evalIn(t, inst, `host.on("e", () => 1); [host.rpcSync("stats"), host.rpcSync("dispatch")]`)
			isJsError("Error", kafig.ErrReentrantCall.Error())(t, c, res, err)
		}},
		{name: "async-handler-evals-its-instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst := reentrant(t, c.rt)
			res, err := evalIn(t, inst, `try { await host.rpc("aeval") } catch (e) { e.message }`, kafig.WithAsync())
			isValue(`"`+kafig.ErrReentrantCall.Error()+`"`)(t, c, res, err)
		}},
		{name: "other-instance-from-handler-works", noInstance: true, run: func(t *testing.T, c *cctx) {
			other, err := c.rt.Instance(t.Context())
			require.NoError(t, err)
			defer other.Close(context.Background())
			router := kafig.NewRPCRouter().WithSync("other", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
				return other.Eval(ctx, `40 + 2`)
			})
			inst, err := c.rt.Instance(t.Context(), kafig.WithRouter(router))
			require.NoError(t, err)
			defer inst.Close(context.Background())
			res, err := evalIn(t, inst, `host.rpcSync("other")`)
			isValue(`42`)(t, c, res, err)
		}},
		{name: "runtime-closed-from-handler", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b)
			bystander, err := rt.Instance(t.Context())
			require.NoError(t, err)
			router := kafig.NewRPCRouter().WithSync("closeRuntime", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
				return nil, rt.Close(ctx)
			})
			inst, err := rt.Instance(t.Context(), kafig.WithRouter(router))
			require.NoError(t, err)
			_, err = evalIn(t, inst, `host.rpcSync("closeRuntime"); for (;;) {}`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			closedNow(t, inst)
			closedNow(t, bystander)
			_, err = rt.Instance(t.Context())
			assert.ErrorIs(t, err, kafig.ErrClosed)
		}},
		{name: "nil-contexts", noInstance: true, run: func(t *testing.T, c *cctx) {
			//lint:ignore SA1012 a nil context is what this case tests
			rt, err := kafig.New(nil, c.b.new())
			require.NoError(t, err)
			//lint:ignore SA1012 a nil context is what this case tests
			defer rt.Close(nil)
			//lint:ignore SA1012 a nil context is what this case tests
			bc, err := rt.Compile(nil, `6 * 7`)
			require.NoError(t, err)
			//lint:ignore SA1012 a nil context is what this case tests
			inst, err := rt.Instance(nil)
			require.NoError(t, err)
			//lint:ignore SA1012 a nil context is what this case tests
			res, err := inst.EvalCompiled(nil, bc)
			isValue(`42`)(t, c, res, err)
		}},
	}
	runCases(t, cases)
}
