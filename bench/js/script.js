(function () {
  // A small library of the kind a user ships with each script: many
  // functions, little work. Parsing dominates; bytecode skips it.
  function slugify(s) {
    return String(s).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  }
  function isEmail(s) { return /^[^@\s]+@[^@\s]+\.[a-z]{2,}$/i.test(s); }
  function formatMoney(cents, currency) {
    var sign = cents < 0 ? "-" : "";
    var v = Math.abs(cents);
    var whole = String(Math.floor(v / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return sign + (currency || "$") + whole + "." + String(v % 100).padStart(2, "0");
  }
  function deepMerge(a, b) {
    var out = {};
    Object.keys(a).forEach(function (k) { out[k] = a[k]; });
    Object.keys(b).forEach(function (k) {
      out[k] = a[k] && typeof a[k] === "object" && b[k] && typeof b[k] === "object" && !Array.isArray(b[k])
        ? deepMerge(a[k], b[k]) : b[k];
    });
    return out;
  }
  function pick(o, keys) {
    var out = {};
    for (var i = 0; i < keys.length; i++) if (keys[i] in o) out[keys[i]] = o[keys[i]];
    return out;
  }
  function groupBy(list, key) {
    var out = {};
    for (var i = 0; i < list.length; i++) {
      var k = typeof key === "function" ? key(list[i]) : list[i][key];
      (out[k] || (out[k] = [])).push(list[i]);
    }
    return out;
  }
  function debounceKey(parts) { return parts.map(function (p) { return encodeURIComponent(p); }).join("/"); }
  function validate(order) {
    var errors = [];
    if (!order || typeof order !== "object") return ["order must be an object"];
    if (!isEmail(order.email)) errors.push("email");
    if (!Array.isArray(order.items) || order.items.length === 0) errors.push("items");
    else order.items.forEach(function (it, i) {
      if (typeof it.sku !== "string" || it.sku.length < 3) errors.push("items[" + i + "].sku");
      if (!(it.qty > 0 && it.qty === Math.floor(it.qty))) errors.push("items[" + i + "].qty");
      if (!(it.price >= 0)) errors.push("items[" + i + "].price");
    });
    return errors;
  }
  function total(order) {
    return order.items.reduce(function (s, it) { return s + it.qty * it.price; }, 0);
  }
  var defaults = { currency: "EUR", shipping: { method: "standard", days: 3 }, gift: false };
  var order = deepMerge(defaults, {
    email: "buyer@example.com",
    shipping: { days: 2 },
    items: [{ sku: "abc-1", qty: 2, price: 1250 }, { sku: "xyz-9", qty: 1, price: 99900 }]
  });
  var errs = validate(order);
  return {
    ok: errs.length === 0,
    slug: slugify("Hello, Sandboxed World!"),
    total: formatMoney(total(order), "€"),
    shipping: pick(order.shipping, ["method", "days"]),
    groups: Object.keys(groupBy(order.items, function (it) { return it.qty > 1 ? "many" : "one"; })).length,
    key: debounceKey(["a b", "c/d"])
  };
})()
