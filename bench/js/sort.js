(function () {
  var seed = 1;
  function rnd() { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; }
  var total = 0;
  for (var round = 0; round < 1; round++) {
    var nums = [];
    for (var i = 0; i < 20000; i++) nums.push(rnd() % 1000000);
    nums.sort(function (a, b) { return a - b; });
    var objs = [];
    for (var j = 0; j < 8000; j++) {
      var r = rnd();
      objs.push({ name: "n" + (r % 5000), age: r % 90, score: (r % 1000) / 10 });
    }
    objs.sort(function (a, b) {
      if (a.age !== b.age) return a.age - b.age;
      if (a.name !== b.name) return a.name < b.name ? -1 : 1;
      return b.score - a.score;
    });
    var strs = objs.map(function (o) { return o.name; });
    strs.sort();
    total += nums[0] + nums[10000] + nums[19999] + objs[0].age + objs[7999].age + strs[4000].length;
  }
  return total;
})()
