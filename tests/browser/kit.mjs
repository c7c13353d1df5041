// levee.js alone in a real browser (Debian's Chromium, driven by playwright-core), against
// a Node server that answers as scripted here:
//
//   poll: If-None-Match with the last ETag, 304s do not call onChange, a new version does,
//   a 404 is null, a page turning visible polls at once → submit: a dropped connection, a 503 and a 429 are retried with one
//   Idempotency-Key; a 422 rejects with the JSON error and leaves the outbox → a page
//   reloaded while its submit was failing resends it from localStorage with the same key
//   → alerts: escaped text, no javascript: link, one banner hidden at its ends_at and
//   another shown at its starts_at by timers, with no new poll.
//
// Run by crates/levee/tests/browser_demo.rs. Environment: CHROMIUM (default
// /usr/bin/chromium); LEVEE_BROWSER_ARTIFACTS (a folder for a screenshot on failure).
// Prints `ok - …` for each check; exits 1 with `FAILED: …` on the first that fails.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { check, failed, launch, ok, screenshot, step, watchdog } from './lib.mjs';

const WAIT = 20_000;
const WHOLE_RUN = 120_000;
const LEVEE_JS = readFileSync(new URL('../../crates/levee/assets/levee.js', import.meta.url));

async function until(what, test) {
  const deadline = Date.now() + WAIT;
  while (!(await test())) {
    check(Date.now() < deadline, `${what}: not within ${WAIT / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// What the server does and saw.
const state = {
  version: 1,
  gets: [], // {path, inm, status}
  posts: [], // {key, body, answer}
  answers: [], // scripted answers to the next POSTs: 'drop' or a status
  down: false, // drop every POST
  alerts: null,
};

const server = createServer((req, res) => {
  let body = '';
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    const path = new URL(req.url, 'http://x').pathname;
    if (req.method === 'POST') {
      const key = req.headers['idempotency-key'];
      const answer = state.down ? 'drop' : state.answers.length ? state.answers.shift() : 202;
      state.posts.push({ key, body: JSON.parse(body), answer });
      if (answer === 'drop') return req.socket.destroy();
      const headers = { 'Content-Type': 'application/json' };
      if (answer === 429) headers['Retry-After'] = '1';
      res.writeHead(answer, headers);
      if (answer === 202) return res.end(JSON.stringify({ id: `id-${key}`, stream: 's', status: 'queued' }));
      const code = { 422: 'schema_violation', 429: 'rate_limited', 503: 'unavailable' }[answer];
      return res.end(JSON.stringify({ error: { code, message: `scripted ${answer}` } }));
    }
    const inm = req.headers['if-none-match'] || null;
    const send = (status, type, content, etag) => {
      state.gets.push({ path, inm, status });
      res.writeHead(status, { 'Content-Type': type, ...(etag ? { ETag: etag } : {}) });
      res.end(status === 304 ? undefined : content);
    };
    if (path === '/levee.js') return send(200, 'text/javascript', LEVEE_JS);
    if (path === '/page.html') {
      return send(200, 'text/html', '<!doctype html><div id="alerts"></div><script src="/levee.js"></script>');
    }
    if (path === '/data.json') {
      const etag = `"v${state.version}"`;
      return send(inm === etag ? 304 : 200, 'application/json', JSON.stringify({ version: state.version }), etag);
    }
    if (path === '/alerts.json' && state.alerts) {
      return send(inm === '"a1"' ? 304 : 200, 'application/json', JSON.stringify(state.alerts), '"a1"');
    }
    send(404, 'application/json', '{"error":{"code":"not_found","message":"no such file"}}');
  });
});

watchdog(WHOLE_RUN);

let browser;
let page;
const pageErrors = [];
try {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  browser = await launch(WAIT);
  page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${base}/page.html`);
  check(await page.evaluate(() => typeof window.levee?.poll === 'function'), 'window.levee.poll is not a function');
  ok(`levee.js loads as a classic script in Chromium ${browser.version()}`);

  await step('poll', async () => {
    await page.evaluate(() => {
      window.changes = [];
      window.stopPoll = levee.poll('/data.json', (json) => window.changes.push(json), { interval: 100 });
    });
    const data = () => state.gets.filter((g) => g.path === '/data.json');
    await until('three polls of /data.json', () => data().length >= 3);
    const [first, ...rest] = data();
    check(first.inm === null && first.status === 200, `the first poll was ${JSON.stringify(first)}`);
    check(rest.every((g) => g.inm === '"v1"' && g.status === 304), `later polls were ${JSON.stringify(rest)}`);
    check((await page.evaluate(() => window.changes.length)) === 1, 'a 304 called onChange');
    ok(`the first poll got 200, the next ${rest.length} sent If-None-Match "v1" and got 304; onChange ran once`);
    state.version = 2;
    await until('onChange with version 2', () => page.evaluate(() => window.changes.length === 2));
    const changes = await page.evaluate(() => window.changes);
    check(changes[1].version === 2, `the second change is ${JSON.stringify(changes[1])}`);
    ok('a new ETag brought onChange the new content');
    await page.evaluate(() => window.stopPoll());
    await page.evaluate(() => {
      window.missing = [];
      window.stopMissing = levee.poll('/missing.json', (json) => window.missing.push(json), { interval: 100 });
    });
    await until('two polls of /missing.json', () => state.gets.filter((g) => g.path === '/missing.json').length >= 2);
    const missing = await page.evaluate(() => window.missing);
    check(missing.length === 1 && missing[0] === null, `a 404 gave onChange ${JSON.stringify(missing)}`);
    await page.evaluate(() => window.stopMissing());
    ok('a 404 calls onChange(null) once');

    // Ten minutes between polls: a second request can only come from the page turning visible.
    const seen = () => state.gets.filter((g) => g.path === '/seen.json').length;
    await page.evaluate(() => {
      window.stopSeen = levee.poll('/seen.json', () => {}, { interval: 600000, hiddenInterval: 600000 });
    });
    await until('the first poll of /seen.json', () => seen() === 1);
    await page.evaluate(() => {
      for (const visibilityState of ['hidden', 'visible']) {
        Object.defineProperty(document, 'visibilityState', { value: visibilityState, configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      }
    });
    await until('a poll when the page became visible', () => seen() === 2);
    await page.evaluate(() => window.stopSeen());
    ok('a page becoming visible again polls at once');
  });

  await step('submit retries with one Idempotency-Key', async () => {
    state.posts = [];
    state.answers = ['drop', 503, 429];
    const result = await page.evaluate(() => levee.submit('s', { n: 1 }, { retryDelay: 50, maxRetryDelay: 200 }));
    const answers = state.posts.map((p) => p.answer);
    check(answers.join() === 'drop,503,429,202', `the server answered ${answers}`);
    const keys = new Set(state.posts.map((p) => p.key));
    check(keys.size === 1 && keys.has(result.key), `keys ${[...keys]} for result ${JSON.stringify(result)}`);
    check(result.id === `id-${result.key}` && result.status === 'queued', `resolved ${JSON.stringify(result)}`);
    check((await page.evaluate(() => levee.outbox().length)) === 0, 'the outbox is not empty after the 202');
    ok(`a dropped connection, a 503 and a 429 were retried with key ${result.key}; resolved {id, status}; outbox empty`);

    state.answers = [422];
    const refused = await page.evaluate(() =>
      levee.submit('s', { n: 2 }).then(
        () => null,
        (e) => ({ status: e.status, code: e.code, message: e.message }),
      ),
    );
    check(refused && refused.status === 422 && refused.code === 'schema_violation', `a 422 gave ${JSON.stringify(refused)}`);
    check((await page.evaluate(() => levee.outbox().length)) === 0, 'a refused submit stayed in the outbox');
    ok('a 422 rejects with its code and leaves the outbox');
  });

  await step('a reload resends the outbox with the same key', async () => {
    state.posts = [];
    state.down = true;
    await page.evaluate(() => {
      levee.submit('s', { n: 3 }, { retryDelay: 50, maxRetryDelay: 200 });
    });
    await until('two failed attempts', () => state.posts.length >= 2);
    const pending = await page.evaluate(() => levee.outbox());
    check(pending.length === 1 && pending[0].payload.n === 3, `the outbox holds ${JSON.stringify(pending)}`);
    check(pending[0].key === state.posts[0].key, 'the outbox key is not the one sent');
    state.down = false;
    await page.reload();
    await until('the outbox sent after the reload', () => page.evaluate(() => levee.outbox().length === 0));
    const keys = new Set(state.posts.map((p) => p.key));
    check(keys.size === 1, `the attempts used ${keys.size} keys`);
    check(state.posts.some((p) => p.answer === 202), 'no attempt got a 202');
    ok(`${state.posts.length} attempts across a reload, all with key ${pending[0].key}`);
  });

  await step('alerts by their times', async () => {
    // Eight seconds ahead: the first render comes well before, and the timers after.
    const at = new Date(Date.now() + 8000).toISOString();
    state.alerts = {
      alerts: [
        { id: 1, message: 'Ends soon', severity: 'info', starts_at: null, ends_at: at, link: null, states: [] },
        { id: 2, message: 'Starts soon', severity: 'warning', starts_at: at, ends_at: null, link: null, states: [] },
        { id: 3, message: '<b>not bold</b>', severity: 'critical', starts_at: null, ends_at: null, link: 'javascript:alert(1)', states: [] },
      ],
    };
    await page.evaluate(() => {
      const el = document.getElementById('alerts');
      window.renders = [];
      new MutationObserver(() =>
        window.renders.push([...el.children].map((c) => c.getAttribute('data-alert-id')).join()),
      ).observe(el, { childList: true });
      levee.alerts(el, { interval: 600000 });
    });
    await until('the first render', () => page.evaluate(() => window.renders.length >= 1));
    check((await page.evaluate(() => window.renders[0])) === '1,3', `the first render showed ${await page.evaluate(() => window.renders[0])}`);
    const escaped = page.locator('[data-alert-id="3"]');
    check((await escaped.innerText()) === '<b>not bold</b>', `the alert text is ${JSON.stringify(await escaped.innerText())}`);
    check((await escaped.locator('b, a').count()) === 0, 'the alert made a <b> or kept a javascript: link');
    check((await escaped.getAttribute('class')) === 'levee-alert levee-alert-critical', 'no severity class');
    ok('banners 1 and 3 shown; text escaped, the javascript: link dropped, severity as a class');
    await until('the banners at their times', () => page.evaluate(() => window.renders.at(-1) === '2,3'));
    const fetched = state.gets.filter((g) => g.path === '/alerts.json').length;
    check(fetched === 1, `alerts.json was fetched ${fetched} times`);
    ok('at its ends_at banner 1 went and at its starts_at banner 2 came, by timers, with no new poll');
  });

  check(pageErrors.length === 0, `JavaScript errors: ${pageErrors.join('; ')}`);
  ok('no JavaScript errors');
  console.log('all levee.js checks passed');
} catch (e) {
  failed(e, pageErrors, 'JavaScript errors');
  if (page) {
    try {
      await screenshot(page, 'kit-failure.png');
    } catch {}
  }
} finally {
  if (browser) await browser.close().catch(() => {});
  server.close();
}
