package kafig

import "errors"

// errBackstop is the stop reason when the interrupt callback, asked by the
// monitor, said stop.
var errBackstop = errors.New("kafig: interrupt callback said stop while the guest did not poll")

// watch is the backstop for one instance, called by the runtime's monitor
// goroutine about every monitorTick while a guest call runs. The guest polls
// the interrupt import every abi.InterruptInterval poll points, normally
// well under a millisecond apart; a guest that has not polled for a while
// is inside a builtin that does not poll (or is very slow), and only a stop
// from outside can end it. That kills the instance, so the monitor only
// does it when a poll would have said stop:
//
//   - the call's context ended and the guest has not polled for ctxStale;
//   - the guest has not polled for pollStale and the interrupt callback,
//     asked with the current CPU time estimate, says stop.
//
// Time inside RPC handlers is not watched (the handler owns that time).
// runMu is held from the decision to the Stop, so that only the call that
// was judged is stopped; the interrupt callback runs without it, on a
// goroutine of its own, so that no callback can hold up the monitor (the
// backstop of every instance of the runtime) or Runtime.Close.
func (in *Instance) watch() {
	in.runMu.Lock()
	defer in.runMu.Unlock()
	if !in.running.Load() || in.stopped || in.inHost.Load() || in.runCtx == nil {
		return
	}
	now := nanotime()
	idle := now - in.lastPoll.Load()
	if err := in.runCtx.Err(); err != nil {
		if idle >= int64(ctxStale) {
			in.stopLocked(err)
		}
		return
	}
	cb := in.cfg.interrupt
	if cb == nil || idle < int64(pollStale) {
		return
	}
	// The callback is user code, which may be slow, block, or call Close
	// (of the instance or of the runtime, which waits for this goroutine):
	// it runs on a goroutine of its own, and its verdict applies only to
	// the call it was asked about. A callback already running (asked by a
	// poll or an earlier tick) is not waited for: it gives its own verdict.
	if !in.cbMu.TryLock() {
		return
	}
	cpu := in.cpuNanos.Load() + now - in.callStart - in.hostNanos.Load()
	go in.askForMonitor(cb, in.opcodes.Load(), cpu, in.callStart)
}

// askForMonitor asks the interrupt callback for watch, with cbMu held (it
// unlocks it), and stops the call that started at start if it says stop.
func (in *Instance) askForMonitor(cb func(uint64, uint64) bool, ops uint64, cpu, start int64) {
	stop := in.callInterrupt(cb, ops, cpu)
	in.cbMu.Unlock()
	if !stop {
		return
	}
	in.runMu.Lock()
	defer in.runMu.Unlock()
	if in.running.Load() && !in.stopped && in.callStart == start {
		in.stopLocked(errBackstop)
	}
}

// stopLocked ends the running call from outside; runMu is held.
func (in *Instance) stopLocked(reason error) {
	in.stopped = true
	in.stopReason = reason
	in.rt.log.Debug("kafig: stopping a guest call from outside", "reason", reason)
	in.bi.Stop()
}
