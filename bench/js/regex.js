(function () {
  var seed = 7;
  function rnd(n) { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; }
  var words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Lorem", "ipsum", "sandbox", "kafig"];
  var lines = [];
  for (var i = 0; i < 600; i++) {
    var w = [];
    for (var j = 0; j < 8; j++) w.push(words[rnd(words.length)]);
    var line = w.join(" ");
    if (i % 3 === 0) line += " contact: user" + rnd(1000) + "@host" + rnd(50) + ".example.org";
    if (i % 4 === 0) line += " on 20" + (10 + rnd(15)) + "-0" + (1 + rnd(9)) + "-1" + rnd(10);
    if (i % 5 === 0) line += " ip 10." + rnd(256) + "." + rnd(256) + "." + rnd(256);
    lines.push(line);
  }
  var corpus = lines.join("\n");
  var email = /([a-z0-9._%+-]+)@([a-z0-9.-]+\.[a-z]{2,})/gi;
  var date = /(\d{4})-(\d{2})-(\d{2})/g;
  var ip = /\b(?:\d{1,3}\.){3}\d{1,3}\b/g;
  var word = /\b[A-Z][a-z]+\b/g;
  var total = 0;
  for (var k = 0; k < 2; k++) {
    var m;
    email.lastIndex = 0;
    while ((m = email.exec(corpus)) !== null) total += m[1].length + m[2].length;
    total += (corpus.match(date) || []).length;
    total += (corpus.match(ip) || []).length;
    total += (corpus.match(word) || []).length;
    total += corpus.replace(/\s+/g, " ").length;
    total += corpus.split(/\n/).filter(function (l) { return /fox.*dog|dog.*fox/.test(l); }).length;
    total += corpus.replace(date, "$3/$2/$1").length;
  }
  return total;
})()
