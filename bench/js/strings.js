(function () {
  var words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do"];
  var total = 0;
  for (var round = 0; round < 45; round++) {
    var parts = [];
    for (var i = 0; i < 400; i++) {
      parts.push(words[(i * 7 + round) % 10] + "-" + i);
    }
    var text = parts.join(" ");
    var s = "";
    for (var j = 0; j < 400; j++) s += words[j % 10].charAt(0).toUpperCase() + words[j % 10].slice(1) + ",";
    var fields = text.split(" ");
    var rebuilt = fields.map(function (f) { return f.split("-").reverse().join(":"); }).join("|");
    rebuilt = rebuilt.replaceAll("lorem", "LOREM").replace("ipsum", "IPSUM");
    var up = text.toUpperCase(), lo = up.toLowerCase();
    var count = 0, pos = 0;
    while ((pos = lo.indexOf("dolor", pos)) !== -1) { count++; pos++; }
    var padded = String(round).padStart(8, "0") + `${text.length}/${s.length}`;
    total += rebuilt.length + count + padded.length + s.substring(10, 50).trim().length +
      lo.lastIndexOf("elit") + (text.startsWith("lorem") ? 1 : 0) + fields.length;
  }
  return total;
})()
