/* shop-edge browser snippet (static/README.md). Plain ES2017, no dependencies, CSP-safe
   (no eval, no inline handlers or styles). The sidecar serves it minified at
   /_edge/edge.<hash>.js and as is at /_edge/static/edge.js; load it in <head>:

     <script src="/_edge/static/edge.js" data-edge-slots="#hero,.product-grid"></script>

   - Swaps: asks /_edge/decide?path=... what this visitor gets on this page and applies
     the edits (before, after, prepend, append, set_inner_content, replace, remove,
     reorder) to the slots' CSS selectors, as the sidecar's rewriter would. Not deferred,
     it asks while the page is parsed and fills each slot once parsed (DOMContentLoaded:
     the last pass); a <link rel=preload as=fetch> of the same URL is used. The slots in
     data-edge-slots are hidden (visibility, so nothing moves) until the answer, at most
     data-edge-cap ms (300): after that the original stays. Pages the sidecar already
     personalized (<meta name="shop-edge" content="done">) are left as they are.
   - Single-page shops: decides again on pushState/replaceState/popstate; a slot that
     appears in the DOM gets its path's decision (a new path: a new decision).
   - Beacons to /_edge/events (batched; sendBeacon, else fetch keepalive), only with
     consent and never with Global Privacy Control: Placement Viewed (>= 50% in view for
     1 s), Placement Clicked (links in injected blocks), Product Clicked (links in
     [data-edge-list=recommendations]), Product Engaged (visible time on a product page).
   - Countdowns: [data-edge-countdown][data-deadline] tick every second; past the
     deadline the enclosing [data-edge-offer] is hidden.
   API: window.shopEdge = {consent(bool), decide(), version}. */
(function () {
  "use strict";
  if (window.shopEdge) return;
  window.__shopEdge = true;

  var VERSION = "2";
  var doc = document;
  var script = doc.currentScript || {};
  var attr = function (name) {
    return (script.getAttribute && script.getAttribute(name)) || "";
  };
  var split = function (s) {
    return s.split(",").map(function (x) { return x.trim(); }).filter(Boolean);
  };
  // window.shopEdgeConfig = {cap, consentCookie, consentValues, recommendations, ask}, set
  // by the theme before the snippet, overrides the tag's attributes (for injected tags).
  var conf = window.shopEdgeConfig || {};
  var slots = split(attr("data-edge-slots"));
  var cap = parseInt(conf.cap != null ? conf.cap : attr("data-edge-cap"), 10);
  if (!(cap >= 0)) cap = 300;
  var consentCookie = conf.consentCookie || attr("data-consent-cookie");
  var consentValues = split(String(conf.consentValues || attr("data-consent-values") ||
    "1,yes,true,all"));
  var recSelector = conf.recommendations || attr("data-edge-recommendations") ||
    "[data-edge-list=recommendations]";
  var gpc = navigator.globalPrivacyControl === true;
  var explicit = null; // shopEdge.consent(...) in this page
  var serverConsent = true;

  var done = new WeakSet(); // elements already edited, or inserted by an edit
  var blocks = []; // [{nodes, token}] injected blocks: click and view beacons
  var seq = 0; // the current decision's number: late answers to older ones are dropped
  var decided = null; // the path of the last decision applied (or abandoned)
  var decision = null; // the current decision
  var queue = [];
  var timer = 0;

  var $$ = function (selector, root) {
    try {
      return Array.prototype.slice.call((root || doc).querySelectorAll(selector));
    } catch (e) {
      return [];
    }
  };
  var here = function () { return location.pathname + location.search; };
  // The sidecar personalized this page itself (its marker): no swaps for its path.
  var first = location.pathname + location.search;
  var marked = function () {
    var meta = doc.querySelector("meta[name=shop-edge]");
    return !!meta && meta.getAttribute("content") === "done" && here() === first;
  };
  var known = false; // the visitor cookie is there (a decision came, or a marked page)

  // --- anti-flicker: hide the listed slots, CSP-safe -------------------------------
  var sheet = null;
  var styleNode = null;
  // The elements of these selectors not decided yet (see apply).
  function undecided(selectors) {
    return selectors.map(function (s) { return ":is(" + s + "):not([data-edge-done])"; });
  }

  function hide(selectors) {
    // a rule per selector: one the browser does not know drops only itself
    var css = selectors.map(function (s) { return s + "{visibility:hidden!important}"; }).join("");
    try {
      if (!sheet) {
        sheet = new CSSStyleSheet();
        doc.adoptedStyleSheets = doc.adoptedStyleSheets.concat([sheet]);
      }
      sheet.replaceSync(css);
    } catch (e) {
      // no constructable stylesheets: a <style> with the script's nonce
      if (!styleNode) {
        styleNode = doc.createElement("style");
        if (script.nonce) styleNode.nonce = script.nonce;
        (doc.head || doc.documentElement).appendChild(styleNode);
      }
      styleNode.textContent = css;
    }
  }

  // --- edits: the rewriter's vocabulary ----------------------------------------------
  function fragment(html) {
    var t = doc.createElement("template");
    t.innerHTML = html || "";
    tick(t.content); // a countdown shows ticking from the start (its text does not change)
    // a block's <script> (the sidecar's own countdown script) would not run: left out
    $$("script", t.content).forEach(function (x) { x.parentNode.removeChild(x); });
    var nodes = Array.prototype.slice.call(t.content.childNodes);
    nodes.forEach(function (n) { if (n.nodeType === 1) done.add(n); });
    return { frag: t.content, nodes: nodes };
  }

  function keyOf(item, key) {
    if (key === "first link") {
      var a = item.querySelector("a[href]");
      return a ? a.getAttribute("href") : null;
    }
    return item.getAttribute(key);
  }

  function reorder(el, edit) {
    // the slot's own children (":scope > *" from the sidecar), as the rewriter's items
    var items = $$(edit.items || ":scope > *", el).filter(function (c) {
      return c.parentNode === el;
    });
    var rank = {};
    (edit.order || []).forEach(function (k, i) { if (!(k in rank)) rank[k] = i; });
    var last = (edit.order || []).length;
    var ranked = items.map(function (item, i) {
      var k = keyOf(item, edit.key || "data-product-id");
      return { item: item, r: k !== null && k in rank ? rank[k] : last, i: i };
    });
    ranked.sort(function (a, b) { return a.r - b.r || a.i - b.i; });
    // each item's place is kept (text between items stays put); the items move
    var marks = items.map(function (item) {
      var m = doc.createComment("");
      item.parentNode.replaceChild(m, item);
      return m;
    });
    marks.forEach(function (m, i) { m.parentNode.replaceChild(ranked[i].item, m); });
  }

  // Applies one edit to one element; returns the nodes that show it.
  function edit1(el, e) {
    var f;
    var a = e.action;
    if (a === "reorder") {
      reorder(el, e);
      return [el];
    }
    if (a === "remove") {
      el.parentNode.removeChild(el);
      return [];
    }
    f = fragment(e.html);
    if (a === "before") el.parentNode.insertBefore(f.frag, el);
    else if (a === "after") el.parentNode.insertBefore(f.frag, el.nextSibling);
    else if (a === "prepend") el.insertBefore(f.frag, el.firstChild);
    else if (a === "append") el.appendChild(f.frag);
    else if (a === "set_inner_content") {
      el.textContent = "";
      el.appendChild(f.frag);
      return [el];
    } else if (a === "replace") el.parentNode.replaceChild(f.frag, el);
    else return [];
    return f.nodes.filter(function (n) { return n.nodeType === 1; });
  }

  var CONTENT = { set_inner_content: 1, replace: 1, remove: 1, reorder: 1 };

  // An element the parser is done with: something follows it (or the page is parsed).
  function closed(el) {
    if (doc.readyState !== "loading") return true;
    for (var n = el; n && n !== doc.documentElement; n = n.parentNode) {
      if (n.nextSibling) return true;
    }
    return false;
  }

  // Applies the decision to the elements not edited yet (while the page is parsed: to
  // those already closed, the rest at the next pass); true if anything changed.
  function apply(d) {
    var changed = false;
    var content = new WeakSet(); // one content-changing edit per element: the first
    var touched = []; // done after this pass (an element may take several edits in it)
    (d.edits || []).forEach(function (e) {
      $$(e.selector).forEach(function (el) {
        if (done.has(el) || (CONTENT[e.action] && content.has(el))) return;
        if (!el.parentNode || !closed(el)) return;
        if (CONTENT[e.action]) content.add(el);
        var nodes = edit1(el, e);
        nodes.forEach(function (n) { done.add(n); });
        touched.push(el);
        if (nodes.length) block(nodes, e.token);
        changed = true;
      });
    });
    touched.forEach(function (el) {
      done.add(el);
      el.setAttribute("data-edge-done", "");
    });
    (d.holdouts || []).forEach(function (h) {
      $$(h.selector).forEach(function (el) {
        if (done.has(el) || !closed(el)) return;
        done.add(el);
        block([el], h.token, true);
      });
    });
    // the slots seen are final now: those in the DOM were edited (or stay as they are)
    // (marked, so that a later navigation hides only the slots not decided yet)
    slots.forEach(function (s) {
      $$(s).forEach(function (el) {
        if (!closed(el)) return;
        done.add(el);
        el.setAttribute("data-edge-done", "");
      });
    });
    if (changed) ticking();
    return changed;
  }

  // --- deciding -----------------------------------------------------------------------
  // The blocks' stylesheet: the link still loading (to wait for), or null.
  function css(href) {
    if (!href) return null;
    var link = $$("link[rel=stylesheet]").filter(function (l) {
      return l.getAttribute("href") === href;
    })[0];
    if (link) return link.sheet ? null : link;
    link = doc.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    (doc.head || doc.documentElement).appendChild(link);
    return link;
  }

  function settle(d, mine) {
    if (d) {
      serverConsent = d.consent !== false;
      known = known || serverConsent; // the answer brought the visitor cookie (with consent)
    }
    if (mine !== seq) return flush(); // late, or a newer decision is on its way
    clearTimeout(capTimer);
    if (d && d.product) product(d.product);
    var left = 1;
    var parsing = null; // applies the answer to the slots as the parser closes them
    var pass = function () {
      try {
        if (d) apply(d);
      } catch (e) {
        /* fail open: what could be applied is, the rest of the page as the shop made it */
      }
    };
    var go = function () {
      if (--left > 0 || mine !== seq) return;
      if (parsing) parsing.disconnect();
      decision = d; // (from now on, slots that appear get it too)
      pass();
      hide([]);
      if (!dwell) page();
      try { performance.mark("shop-edge:applied"); } catch (e) { /* old browser */ }
      flush();
    };
    // the blocks show styled (nothing reflows after): their stylesheet first, within the cap
    var link = d && (d.edits || []).length ? css(d.css) : null;
    try {
      if (d && d.css) localStorage.setItem(CSS_KEY, d.css); // (the next page asks for it early)
    } catch (e) { /* no storage */ }
    // the page still parsed (the tag is not deferred): each slot is filled as soon as it
    // is parsed, DOMContentLoaded is the last pass
    var styled = function () {
      if (mine === seq && d && doc.readyState === "loading" && window.MutationObserver) {
        pass();
        parsing = new MutationObserver(function () {
          if (mine === seq) pass();
        });
        parsing.observe(doc.documentElement, { childList: true, subtree: true });
      }
      go();
    };
    if (link) {
      left++;
      var once = function () {
        if (!link) return;
        link.removeEventListener("load", once);
        link.removeEventListener("error", once);
        link = null;
        clearTimeout(wait);
        styled();
      };
      var wait = setTimeout(once, cap);
      link.addEventListener("load", once);
      link.addEventListener("error", once);
    }
    if (doc.readyState === "loading") {
      left++;
      doc.addEventListener("DOMContentLoaded", go);
    }
    // until then only the slots that will change stay hidden
    var changing = d ? (d.edits || []).map(function (e) { return e.selector; }) : [];
    if (left > 1) hide(undecided(changing));
    if (link) go();
    else styled();
  }

  var capTimer = 0;
  var CSS_KEY = "shop-edge:css";
  var preload = doc.querySelector('link[rel=preload][href^="/_edge/decide?"]');
  // While the page is parsed, the question waits until every listed slot is found and
  // closed (their items' ids go with it), else for DOMContentLoaded; it goes at once with
  // the page's preload of it, or shopEdgeConfig.ask = "head" (no ids: a list's order
  // then comes from the catalogue's products of the category).
  function parsed(path) {
    if (doc.readyState !== "loading" || conf.ask === "head") return true;
    if (preload && preload.getAttribute("href") === target(path)) return true;
    return slots.every(function (s) {
      var found = $$(s);
      return found.length > 0 && found.every(closed);
    });
  }
  function target(path) { return "/_edge/decide?path=" + encodeURIComponent(path); }

  function decide() {
    var path = here();
    decided = path;
    if (marked()) return Promise.resolve(null);
    var mine = ++seq;
    decision = null;
    hide(undecided(slots));
    clearTimeout(capTimer);
    var ready = new Promise(function (resolve) {
      if (parsed(path)) return resolve();
      var watcher = window.MutationObserver ? new MutationObserver(function () {
        if (parsed(path)) later();
      }) : null;
      var later = function () {
        if (watcher) watcher.disconnect();
        resolve();
      };
      if (watcher) watcher.observe(doc.documentElement, { childList: true, subtree: true });
      doc.addEventListener("DOMContentLoaded", later);
    });
    return ready.then(function () { return mine === seq ? ask(path, mine) : null; });
  }

  function ask(path, mine) {
    capTimer = setTimeout(function () {
      // /decide is late: the original shows, and stays (no late swap, no flicker)
      if (mine !== seq) return;
      seq++;
      hide([]);
      try { performance.mark("shop-edge:cap"); } catch (e) { /* old browser */ }
    }, cap);
    // the ids of the listed slots' items, for the sidecar to order this page's own
    var ids = [];
    slots.forEach(function (sel) {
      $$(sel).forEach(function (el) {
        Array.prototype.forEach.call(el.children, function (c) {
          var id = c.getAttribute("data-product-id") || c.getAttribute("data-edge-item");
          if (id && ids.length < 200 && !/[,\s]/.test(id)) ids.push(id);
        });
      });
    });
    var url = target(path);
    if (ids.length) url += "&items=" + encodeURIComponent(ids.join(","));
    // the page's <link rel=preload> of this path's decision: the very URL, once
    var early = preload;
    preload = null;
    if (early && early.getAttribute("href") === target(path)) url = target(path);
    return fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .catch(function () { return null; })
      .then(function (d) {
        try {
          settle(d && d.v === 1 ? d : null, mine);
        } catch (e) {
          hide([]); // fail open: the shop's page as it is
        }
        return d;
      });
  }

  // A slot appearing (a single-page shop rendered a view): apply what is decided for
  // this path, or decide again for a new path. Cheap: batched per animation frame.
  var pending = false;
  function appeared() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      if (marked()) return;
      var selectors = slots.concat(
        decision ? (decision.edits || []).concat(decision.holdouts || []).map(function (e) {
          return e.selector;
        }) : []
      );
      var fresh = selectors.some(function (s) {
        return $$(s).some(function (el) { return !done.has(el); });
      });
      if (!fresh) return;
      if (decided !== here()) navigated();
      else if (decision && apply(decision)) flush();
    });
  }

  function navigated() {
    if (decided === here()) return;
    engaged(); // the product page being left
    page();
    decide();
  }

  // --- beacons --------------------------------------------------------------------------
  function allowed() {
    if (gpc) return false;
    if (explicit !== null) return explicit;
    if (consentCookie) {
      var m = doc.cookie.match(new RegExp("(?:^|; )" + consentCookie.replace(/[^\w-]/g, "\\$&") + "=([^;]*)"));
      return !!m && consentValues.indexOf(decodeURIComponent(m[1])) >= 0;
    }
    return serverConsent;
  }

  function send(event, now) {
    if (gpc || explicit === false) return;
    if (queue.length < 100) queue.push(event);
    if (now) flush();
    else if (!timer) timer = setTimeout(flush, 1000);
  }

  function flush() {
    clearTimeout(timer);
    timer = 0;
    // the visitor cookie comes with the first decision: nothing to send before it
    if (!queue.length || !allowed() || !known) return;
    var body = JSON.stringify({ events: queue.splice(0, 100) });
    var url = "/_edge/events";
    if (queue.length) timer = setTimeout(flush, 1000);
    // sendBeacon first: it outlives the page, and its answer never reaches the console
    if (navigator.sendBeacon) {
      try {
        if (navigator.sendBeacon(url, new Blob([body], { type: "application/json" }))) return;
      } catch (e) { /* fall through */ }
    }
    fetch(url, {
      method: "POST",
      body: body,
      keepalive: true,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" }
    }).catch(function () {});
  }

  function block(nodes, token, held) {
    if (!token) return;
    var b = { nodes: nodes, token: token, held: held, seen: false, t: 0, ratio: {} };
    blocks.push(b);
    if (!window.IntersectionObserver) return;
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (en) { b.ratio[nodes.indexOf(en.target)] = en.intersectionRatio; });
      var visible = nodes.some(function (n, i) { return (b.ratio[i] || 0) >= 0.5; });
      clearTimeout(b.t);
      if (visible && !b.seen) {
        b.t = setTimeout(function () {
          b.seen = true;
          io.disconnect();
          send({ event: "Placement Viewed", token: token });
        }, 1000);
      }
    }, { threshold: [0, 0.5, 1] });
    nodes.forEach(function (n) { io.observe(n); });
  }

  function productOf(el) {
    var item = el.closest("[data-product-id],[data-edge-product]");
    return item && (item.getAttribute("data-edge-product") || item.getAttribute("data-product-id"));
  }

  doc.addEventListener("click", function (ev) {
    var link = ev.target && ev.target.closest ? ev.target.closest("a[href]") : null;
    if (!link) return;
    var href;
    try {
      var to = new URL(link.getAttribute("href"), location.href);
      href = to.origin === location.origin ? to.pathname + to.search : to.href;
    } catch (e) {
      return; // not a URL: not a link anywhere
    }
    var now = false;
    blocks.forEach(function (b) {
      var inside = b.nodes.some(function (n) { return n.contains(link); });
      if (inside && !b.held) {
        send({ event: "Placement Clicked", token: b.token, href: href });
        now = true;
      }
    });
    var list = null;
    try { list = link.closest(recSelector); } catch (e) { /* a bad selector */ }
    var id = list && productOf(link);
    if (id) {
      send({ event: "Product Clicked", product_id: id, list_id: "recommendations" });
      now = true;
    }
    if (now) flush();
  }, true);

  // The profiling form, answered without leaving the page: the answer goes as an event
  // (the sidecar checks it as it checks the form's POST), the form gives way to its
  // thanks, and the next question comes with a later page. Without consent, without the
  // visitor cookie, or when the sidecar refuses the answer: the form's own POST.
  doc.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.matches || !form.matches("form.edge-profile-form") || !known || !allowed()) return;
    var skip = ev.submitter && ev.submitter.name === "skip";
    var fields = new FormData(form);
    ev.preventDefault();
    var posted = function () {
      if (skip) {
        var field = doc.createElement("input");
        field.type = "hidden";
        field.name = "skip";
        field.value = "1";
        form.appendChild(field);
      }
      form.submit(); // (no submit event: this listener is not asked again)
    };
    fetch("/_edge/events", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ events: [{
        event: "Profile Form Answered",
        question: String(fields.get("question") || ""),
        answer: skip ? "-" : String(fields.get("answer") || "")
      }] })
    }).then(function (reply) {
      if (reply.status !== 202) return posted();
      var thanks = doc.createElement("p");
      thanks.className = "edge-profile-form__thanks";
      thanks.setAttribute("role", "status");
      thanks.textContent = form.getAttribute("data-thanks") || "Thank you!";
      done.add(thanks);
      form.replaceWith(thanks);
    }, posted);
  });

  // Product dwell: the visible time on a product page, sent when the visitor leaves it.
  var dwell = null;
  function product(id) {
    if (!dwell || dwell.id !== id) dwell = { id: id, ms: 0, since: visible() ? Date.now() : 0 };
  }
  function visible() { return doc.visibilityState !== "hidden"; }
  // The product of a product page: [data-edge-product="id"], the theme's
  // [data-page-type=product][data-product-id], OpenGraph's product:retailer_item_id,
  // else a schema.org Product's sku or productID in JSON-LD.
  function page() {
    var el = doc.querySelector("[data-edge-product],[data-page-type=product][data-product-id]");
    var meta = doc.querySelector('meta[property="product:retailer_item_id"]');
    var id = el ? el.getAttribute("data-edge-product") || el.getAttribute("data-product-id")
      : meta ? meta.getAttribute("content") : ld();
    dwell = null;
    if (id) product(id);
  }
  function ld() {
    var found = null;
    $$('script[type="application/ld+json"]').forEach(function (s) {
      try {
        [].concat(JSON.parse(s.textContent)).forEach(function (o) {
          if (!found && o && o["@type"] === "Product") found = o.sku || o.productID || null;
        });
      } catch (e) { /* not JSON: the theme's business */ }
    });
    return found && String(found);
  }
  function engaged() {
    if (!dwell) return;
    if (dwell.since) dwell.ms += Date.now() - dwell.since;
    var ms = Math.min(Math.round(dwell.ms), 3600000);
    var id = dwell.id;
    dwell = null;
    if (ms > 0) send({ event: "Product Engaged", product_id: id, dwell_ms: ms });
  }
  doc.addEventListener("visibilitychange", function () {
    if (!dwell) return;
    if (visible()) dwell.since = Date.now();
    else if (dwell.since) {
      dwell.ms += Date.now() - dwell.since;
      dwell.since = 0;
    }
    if (!visible()) flush();
  });
  window.addEventListener("pagehide", function () {
    engaged();
    flush();
  });

  // --- countdowns -------------------------------------------------------------------------
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  // "(1d 02:03:04)"; a day or less is "(24:00:00)" down, so the first tick of a
  // 24-hour offer does not change the text's width
  function left(s) {
    var d = s > 86400 ? Math.floor(s / 86400) : 0;
    return (d > 0 ? d + "d " : "") + pad(Math.floor((s - d * 86400) / 3600)) + ":" +
      pad(Math.floor(s % 3600 / 60)) + ":" + pad(s % 60);
  }
  function tick(root) {
    var now = Math.floor(Date.now() / 1000);
    $$("[data-edge-countdown]", root && root.nodeType ? root : doc).forEach(function (node) {
      var deadline = parseInt(node.getAttribute("data-deadline"), 10);
      if (isNaN(deadline)) return;
      var seconds = deadline - now;
      if (seconds > 0) {
        node.textContent = "(" + left(seconds) + ")";
        return;
      }
      // expired: hidden whatever the theme's display (edge.css has the same rule)
      var offer = node.closest("[data-edge-offer]");
      if (offer) {
        offer.hidden = true;
        offer.style.setProperty("display", "none", "important");
      }
      node.textContent = "";
      node.removeAttribute("data-edge-countdown");
    });
  }
  var ticker = 0;
  function ticking() {
    if (ticker || !doc.querySelector("[data-edge-countdown]")) return;
    tick();
    ticker = setInterval(tick, 1000);
  }

  // --- start --------------------------------------------------------------------------------
  function wrap(name) {
    var original = history[name];
    history[name] = function () {
      var result = original.apply(this, arguments);
      navigated();
      return result;
    };
  }
  wrap("pushState");
  wrap("replaceState");
  window.addEventListener("popstate", navigated);

  window.shopEdge = {
    version: VERSION,
    decide: decide,
    consent: function (yes) {
      explicit = !!yes;
      if (consentCookie) {
        var value = yes ? consentValues[0] : "0";
        doc.cookie = consentCookie + "=" + encodeURIComponent(value) +
          "; path=/; max-age=" + (yes ? 31536000 : 0) + "; samesite=lax";
      }
      if (yes) flush();
      else queue = [];
    }
  };

  function ready() {
    page();
    ticking();
    if (marked()) {
      known = allowed(); // the sidecar made this page: with consent, the visitor has its cookie
      decided = here();
      hide([]);
    }
    if (window.MutationObserver) {
      new MutationObserver(appeared).observe(doc.documentElement, { childList: true, subtree: true });
    }
  }

  if (!marked()) {
    try {
      // the blocks' stylesheet the last answer named: loading while this page is parsed
      var early = localStorage.getItem(CSS_KEY);
      if (early && /^\/[^/]/.test(early)) css(early);
    } catch (e) { /* no storage */ }
    decide();
  }
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
