(function () {
  class Account {
    constructor(id, owner) { this.id = id; this.owner = owner; this.balance = 0; this.log = []; }
    deposit(v) { this.balance += v; this.log.push({ kind: "in", v: v }); }
    withdraw(v) { if (v > this.balance) return false; this.balance -= v; this.log.push({ kind: "out", v: v }); return true; }
  }
  var seed = 3;
  function rnd(n) { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; }
  var accounts = new Map();
  for (var i = 0; i < 500; i++) accounts.set("acc" + i, new Account(i, "owner" + (i % 50)));
  var failed = 0;
  for (var t = 0; t < 20000; t++) {
    var a = accounts.get("acc" + rnd(500));
    if (rnd(3) === 0) { if (!a.withdraw(rnd(200))) failed++; } else a.deposit(rnd(100));
  }
  var byOwner = {};
  accounts.forEach(function (a) { byOwner[a.owner] = (byOwner[a.owner] || 0) + a.balance; });
  var owners = Object.keys(byOwner).sort(function (x, y) { return byOwner[y] - byOwner[x]; });
  var seen = new Set();
  var outs = 0;
  for (const a of accounts.values()) {
    for (const e of a.log) if (e.kind === "out") { outs += e.v; seen.add(e.v % 97); }
  }
  var top = [...accounts.values()].filter(a => a.balance > 1000).map(a => ({ id: a.id, b: a.balance }))
    .reduce((acc, x) => acc + x.b, 0);
  return { failed: failed, top: top, first: owners[0], outs: outs, distinct: seen.size };
})()
