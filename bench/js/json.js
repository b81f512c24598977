(function () {
  var seed = 42;
  function rnd() { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; }
  var tags = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
  var records = [];
  for (var i = 0; i < 150; i++) {
    var r = rnd();
    records.push({
      id: i,
      name: "user-" + r.toString(36),
      email: "u" + i + "@example.com",
      active: (r & 1) === 1,
      score: (r % 10000) / 100,
      tags: [tags[r % 8], tags[(r >> 3) % 8], tags[(r >> 6) % 8]],
      address: { street: (r % 999) + " Main St", city: "City " + (r % 50), zip: String(10000 + (r % 89999)) },
      history: [r % 7, r % 11, r % 13, r % 17, r % 19],
      note: "Lorem ipsum dolor sit amet, \"quoted\" \\ escaped \u00e9\u4e2d " + i
    });
  }
  var doc = { version: 3, generated: "2025-04-26T00:00:00Z", records: records };
  var total = 0, s, back;
  for (var k = 0; k < 15; k++) {
    s = JSON.stringify(doc);
    back = JSON.parse(s);
    total += s.length + back.records.length + back.records[(k * 7) % 150].history[2];
  }
  return total;
})()
