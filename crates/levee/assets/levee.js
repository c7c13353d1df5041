/*! levee.js: the levee front-end kit, no dependencies. Docs: docs/levee-js.md */
(function (root) {
  'use strict';
  var doc = root.document;
  var script = doc && doc.currentScript;
  var attr = (name) => (script && script.getAttribute(name)) || '';
  // Where writes go (the intake API) and where published files are read from (levee
  // itself, or a CDN). Set from the script tag's data-api / data-files, or levee.config.
  var config = { api: attr('data-api'), files: attr('data-files') || '/' };
  var OUTBOX = 'levee.outbox';
  var memoryOutbox = [];
  var sending = {}; // Idempotency-Key → the Promise delivering it, so a page sends each once
  var wakers = [];

  function emit(name, detail) {
    root.dispatchEvent(new CustomEvent('levee:' + name, { detail: detail }));
  }
  function files(path) {
    return config.files.replace(/\/?$/, '/') + path;
  }

  // An Idempotency-Key: the same key always makes the same message id, so a retry (from
  // this page or after a reload) never makes a second row.
  function uuid() {
    var c = root.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    var bytes = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(bytes);
    else for (var i = 0; i < 16; i++) bytes[i] = (Math.random() * 256) | 0;
    return Array.from(bytes, (b) => (b + 256).toString(16).slice(1)).join('');
  }

  // The outbox lives in localStorage so unsent posts survive a reload or a closed tab;
  // in memory when storage is unavailable (private modes, disabled cookies).
  function readOutbox() {
    try {
      return JSON.parse(root.localStorage.getItem(OUTBOX) || '[]');
    } catch (e) {
      return memoryOutbox;
    }
  }
  function writeOutbox(items) {
    memoryOutbox = items;
    try {
      if (items.length) root.localStorage.setItem(OUTBOX, JSON.stringify(items));
      else root.localStorage.removeItem(OUTBOX);
    } catch (e) {}
  }
  function removeFromOutbox(key) {
    writeOutbox(readOutbox().filter((item) => item.key !== key));
  }

  // Sleep for ms, or until the browser says it is back online.
  function sleep(ms) {
    return new Promise(function (resolve) {
      var timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wakers = wakers.filter((w) => w !== done);
        resolve();
      }
      wakers.push(done);
    });
  }

  function backoff(attempt, base, max) {
    var ms = Math.min(max, base * Math.pow(2, attempt));
    return ms / 2 + Math.random() * ms / 2; // jitter: clients that failed together spread out
  }

  // Retry-After in seconds or as an HTTP date; null when absent.
  function retryAfter(response) {
    var value = response.headers.get('Retry-After');
    if (!value) return null;
    var seconds = /^\d+$/.test(value) ? +value : (Date.parse(value) - Date.now()) / 1000;
    return isNaN(seconds) ? null : Math.max(0, seconds) * 1000;
  }

  function failure(status, body) {
    var e = (body && body.error) || {};
    var error = new Error(e.message || 'HTTP ' + status);
    error.status = status;
    error.code = e.code || 'http_' + status;
    error.details = e.details;
    return error;
  }

  // Send one outbox item until levee answers 202 (resolve) or a permanent 4xx (reject).
  // Network errors, 408, 429 and 5xx are retried with exponential backoff and jitter.
  function deliver(item, opts) {
    if (sending[item.key]) return sending[item.key];
    opts = opts || {};
    var base = opts.retryDelay || 1000;
    var max = opts.maxRetryDelay || 30000;
    var attempts = opts.attempts || Infinity;
    var run = (async function () {
      for (var attempt = 0; ; attempt++) {
        var response = null;
        var error;
        try {
          response = await fetch(item.url, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', 'Idempotency-Key': item.key },
            body: JSON.stringify(item.payload),
            cache: 'no-store'
          });
        } catch (e) {
          error = e;
        }
        var body = null;
        if (response) {
          body = await response.json().catch(() => null);
          if (response.ok) {
            removeFromOutbox(item.key);
            var result = {
              id: body && body.id,
              status: body && body.status,
              stream: item.stream,
              key: item.key,
              payload: item.payload
            };
            emit('delivered', result);
            return result;
          }
          error = failure(response.status, body);
          var s = response.status;
          if (s < 500 && s !== 408 && s !== 429) {
            removeFromOutbox(item.key);
            error.stream = item.stream;
            error.key = item.key;
            emit('failed', error);
            throw error;
          }
        }
        if (attempt + 1 >= attempts) throw error;
        var delay = (response && retryAfter(response)) || backoff(attempt, base, max);
        if (opts.onRetry) opts.onRetry(error, attempt + 1, delay);
        emit('retry', { key: item.key, stream: item.stream, attempt: attempt + 1, delay: delay, error: error });
        await sleep(delay);
      }
    })();
    sending[item.key] = run;
    var forget = () => delete sending[item.key];
    run.then(forget, forget);
    return run;
  }

  var levee = {
    version: '1',
    config: config,

    // POST payload to a stream; resolves {id, status} after the 202.
    submit: function (stream, payload, opts) {
      opts = opts || {};
      var item = {
        key: opts.idempotencyKey || uuid(),
        stream: stream,
        url: (opts.api != null ? opts.api : config.api).replace(/\/$/, '') +
          '/v1/streams/' + encodeURIComponent(stream),
        payload: payload,
        at: Date.now()
      };
      // In the outbox before the first byte is sent: a tab closed mid-request loses nothing.
      writeOutbox(readOutbox().concat([item]));
      return deliver(item, opts);
    },

    // Submissions not yet acknowledged, oldest first.
    outbox: function () {
      return readOutbox();
    },

    // Send what is left in the outbox (done on load and when the browser comes online).
    // Resolves with the results once each has been delivered or refused.
    flush: function (opts) {
      return Promise.all(readOutbox().map((item) =>
        deliver(item, opts).catch((e) => ({ error: e, key: item.key }))));
    },

    // Fetch url now and then; onChange(json) when its content changed (null for a 404).
    // Returns a function that stops polling.
    poll: function (url, onChange, opts) {
      opts = opts || {};
      var interval = opts.interval || 10000;
      var hiddenInterval = opts.hiddenInterval || Math.max(60000, interval);
      var maxDelay = opts.maxDelay || 300000;
      var etag = null;
      var cross = new URL(url, location.href).origin !== location.origin;
      var last; // the text last handed to onChange; undefined before the first
      var failures = 0;
      var timer = null;
      var busy = false;
      var stopped = false;
      var hidden = () => doc && doc.visibilityState === 'hidden';

      function schedule() {
        clearTimeout(timer);
        if (stopped) return;
        var delay = failures
          ? backoff(failures, interval, maxDelay)
          : hidden() ? hiddenInterval : interval;
        timer = setTimeout(tick, delay);
      }

      async function tick() {
        if (busy || stopped) return;
        busy = true;
        clearTimeout(timer);
        try {
          // Same origin: our own If-None-Match (cache: no-store), so a 304 reaches us.
          // Cross-origin that header would need a CORS preflight, so the browser
          // revalidates its cached copy itself (no-cache) and we compare the text.
          var response = await fetch(url, cross
            ? { cache: 'no-cache' }
            : { headers: etag ? { 'If-None-Match': etag } : {}, cache: 'no-store' });
          if (response.status !== 304) {
            var text;
            if (response.status === 404) text = 'null';
            else if (response.ok) text = await response.text();
            else throw failure(response.status);
            if (text !== last) {
              var value = JSON.parse(text);
              last = text;
              if (!stopped) onChange(value);
            }
            etag = response.ok ? response.headers.get('ETag') : null; // once it parsed
          }
          failures = 0;
        } catch (e) {
          failures++;
          etag = null;
          if (opts.onError) opts.onError(e);
        }
        busy = false;
        schedule();
      }

      function wake() {
        if (!hidden()) tick();
        else schedule();
      }
      if (doc) doc.addEventListener('visibilitychange', wake);
      root.addEventListener('online', wake);
      tick();
      return function stop() {
        stopped = true;
        clearTimeout(timer);
        if (doc) doc.removeEventListener('visibilitychange', wake);
        root.removeEventListener('online', wake);
      };
    },

    // Render alerts.json's banners into el, each shown from starts_at to ends_at.
    alerts: function (el, opts) {
      opts = opts || {};
      var alerts = [];
      var timer = null;
      var time = (t) => (t ? Date.parse(t) : null);

      function render() {
        clearTimeout(timer);
        var now = Date.now();
        var next = Infinity;
        var shown = alerts.filter((a) => {
          var start = time(a.starts_at);
          var end = time(a.ends_at);
          if (start > now) next = Math.min(next, start);
          if (end > now) next = Math.min(next, end);
          var forState = !opts.state || !a.states || !a.states.length ||
            a.states.indexOf(opts.state) >= 0;
          return forState && !(start > now) && !(end !== null && end <= now);
        });
        el.replaceChildren.apply(el, shown.map(banner));
        el.hidden = !shown.length;
        // Wake at the next start or end; setTimeout's limit is about 24 days.
        if (next < Infinity) timer = setTimeout(render, Math.min(next - now + 50, 2e9));
      }

      // Text only (textContent), and links only to http(s): nothing in an alert runs.
      function banner(a) {
        var div = doc.createElement('div');
        var severity = String(a.severity || 'info').replace(/[^a-z]/g, '');
        div.className = 'levee-alert levee-alert-' + severity;
        div.setAttribute('role', severity === 'info' ? 'status' : 'alert');
        div.setAttribute('data-alert-id', a.id);
        var text = doc.createElement('span');
        text.textContent = a.message;
        div.appendChild(text);
        if (a.link) {
          var href;
          try {
            href = new URL(a.link, root.location.href);
          } catch (e) {}
          if (href && /^https?:$/.test(href.protocol)) {
            var link = doc.createElement('a');
            link.href = href.href;
            link.textContent = opts.linkText || 'More';
            div.appendChild(doc.createTextNode(' '));
            div.appendChild(link);
          }
        }
        return div;
      }

      el.hidden = true;
      var stop = levee.poll(opts.url || files('alerts.json'), (json) => {
        alerts = (json && json.alerts) || [];
        render();
      }, opts);
      return () => {
        stop();
        clearTimeout(timer);
      };
    },

    // Fill a form's city and state from zip/{zip}.json once its zip holds five digits.
    zipPrefill: function (form, opts) {
      opts = opts || {};
      var base = opts.base || files('zip/');
      var fields = form.elements;
      var zip = fields[opts.zip || 'zip'];
      var targets = { city: fields[opts.city || 'city'], state: fields[opts.state || 'state'] };
      var looked = null;

      // Ours to change: empty, or still what we filled in (the user has not typed over it).
      function set(field, value) {
        if (!field || (field.value && field.value !== field.getAttribute('data-levee-filled'))) return;
        field.value = value || '';
        field.setAttribute('data-levee-filled', field.value);
        field.dispatchEvent(new Event('input', { bubbles: true }));
      }

      async function lookup() {
        var value = zip.value.trim();
        if (!/^\d{5}$/.test(value) || value === looked) return;
        looked = value;
        var found = null;
        try {
          var response = await fetch(base + value + '.json');
          if (response.ok) found = await response.json();
        } catch (e) {}
        if (looked !== value) return; // the zip changed while we looked
        if (Array.isArray(found)) found = found[0];
        found = found || {};
        set(targets.city, found.city);
        set(targets.state, found.state);
        if (opts.onFill) opts.onFill(found);
      }

      var reset = () => (looked = null);
      zip.addEventListener('input', lookup);
      zip.addEventListener('change', lookup);
      form.addEventListener('reset', reset);
      lookup();
      return () => {
        zip.removeEventListener('input', lookup);
        zip.removeEventListener('change', lookup);
        form.removeEventListener('reset', reset);
      };
    },

    // Show el while status.json says the stream is delayed (paused or lagging).
    status: function (stream, el, opts) {
      opts = opts || {};
      el.hidden = true;
      return levee.poll(opts.url || files('status.json'), (json) => {
        var s = json && json.streams && json.streams[stream];
        var delayed = !!(s && s.delayed);
        el.hidden = !delayed;
        el.textContent = delayed
          ? s.message || opts.message || 'Received \u2014 it will appear shortly'
          : '';
        if (opts.onChange) opts.onChange(delayed, s);
      }, opts);
    }
  };

  root.levee = levee;
  if (doc) {
    root.addEventListener('online', () => {
      wakers.slice().forEach((wake) => wake());
      levee.flush();
    });
    // After the page's own scripts, so their levee:delivered listeners see the resends.
    var resend = () => setTimeout(levee.flush, 0);
    if (doc.readyState === 'complete') resend();
    else root.addEventListener('load', resend);
  }
})(typeof self !== 'undefined' ? self : this);
