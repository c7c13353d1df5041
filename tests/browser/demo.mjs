// The demo page (`/` without a site) in a real browser (Debian's Chromium, driven by
// playwright-core) against a running `levee serve` with the starter config:
//
//   ZIP 37415 fills Chattanooga / TN (and a city typed by hand stays) → the form's submit
//   reaches the database (`stored`) → the count and the latest signers update through the
//   SQL jobs → a post on the `news` blog and an alert made through the content API show
//   up → pausing the stream shows the delayed message, resuming hides it → with levee
//   killed, one tab submits and keeps retrying and another submits and is closed; once
//   levee is back both arrive, each with one Idempotency-Key.
//
// Run by crates/levee/tests/browser_demo.rs, which starts levee and stops it on request:
// this script prints `@levee stop` or `@levee start` and reads the answer on stdin. It
// prints `@signed EMAIL` for each sign-up the database must hold exactly once (the Rust
// test checks the table afterwards).
//
// Environment: LEVEE_URL, LEVEE_ADMIN_TOKEN (required); CHROMIUM (default
// /usr/bin/chromium); LEVEE_BROWSER_ARTIFACTS (a folder for screenshots on failure).
// Prints `ok - …` for each check; exits 1 with `FAILED: …` on the first that fails.

import { createInterface } from 'node:readline';
import { check, failed, keepPages, launchStep, newContext, noPageErrors, ok, required, step, timeChecks, unique, watchdog } from './lib.mjs';

const WAIT = 45_000; // for any one element, publish or delivery; polls are every 10 s
const WHOLE_RUN = 420_000;

let base = required('LEVEE_URL').replace(/\/+$/, '');
const token = required('LEVEE_ADMIN_TOKEN');

// The harness's answers to `@levee …`, one line each.
const answers = [];
let answered = null;
const stdin = createInterface({ input: process.stdin });
stdin.on('line', (line) => {
  if (answered) {
    const resolve = answered;
    answered = null;
    resolve(line);
  } else {
    answers.push(line);
  }
});
async function harness(command) {
  console.log(`@levee ${command}`);
  const answer = await new Promise((resolve) => {
    if (answers.length) resolve(answers.shift());
    else answered = resolve;
  });
  check(!answer.startsWith('error'), `the harness could not ${command}: ${answer}`);
  return answer;
}

timeChecks();

async function api(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  check(response.ok, `${method} ${path}: HTTP ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Wait until levee says the message is in the database (`stored`). */
async function stored(id) {
  const deadline = Date.now() + WAIT;
  let status;
  for (;;) {
    const response = await fetch(`${base}/v1/streams/signups/messages/${encodeURIComponent(id)}`);
    check(response.ok, `GET messages/${id}: HTTP ${response.status}`);
    status = (await response.json()).status;
    if (status === 'stored') return;
    check(Date.now() < deadline, `message ${id} is still ${status} after ${WAIT / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Wait until the page's #result says `status`; returns the message id it tracks. */
async function resultIs(page, status) {
  const result = page.locator(`#result[data-status="${status}"]`);
  const refused = page.locator('#result[data-status="refused"], #result[data-status="invalid"]');
  await result.or(refused).first().waitFor({ timeout: WAIT });
  if ((await refused.count()) > 0) {
    throw new Error(`the form answered ${JSON.stringify(await page.locator('#result').innerText())}`);
  }
  return result.getAttribute('data-id');
}

async function fillSignup(page, email, name, zip) {
  await page.fill('input[name=email]', email);
  await page.fill('input[name=name]', name);
  await page.fill('input[name=zip]', zip);
  await page.fill('textarea[name=message]', `Signed in a browser test, run ${unique}`);
}

async function count(page) {
  const text = (await page.locator('#count').innerText()).replace(/,/g, '');
  return /^\d+$/.test(text) ? Number(text) : null;
}

watchdog(WHOLE_RUN);

let browser;
let context;
const pageErrors = [];
// Idempotency-Keys the pages sent, per email in the payload.
const keysByEmail = new Map();
try {
  browser = await launchStep(WAIT);
  context = await newContext(browser, WAIT, pageErrors, { viewport: { width: 390, height: 844 } });
  context.on('request', (request) => {
    const key = request.headers()['idempotency-key'];
    if (request.method() === 'POST' && key) {
      const email = JSON.parse(request.postData() || '{}').email;
      if (!keysByEmail.has(email)) keysByEmail.set(email, new Set());
      keysByEmail.get(email).add(key);
    }
  });
  // Deliveries each page saw, including those of the outbox after a load.
  await context.addInitScript(() => {
    window.__delivered = [];
    window.addEventListener('levee:delivered', (e) => window.__delivered.push(e.detail));
  });
  const page = await context.newPage();

  let before;
  await step('open the demo page', async () => {
    const response = await page.goto(`${base}/`);
    check(response && response.ok(), `GET /: HTTP ${response && response.status()}`);
    check(await page.evaluate(() => typeof window.levee?.submit === 'function'), 'window.levee.submit is not a function');
    ok('/ is the demo page and /levee.js defines window.levee');
    await page.waitForFunction(() => /^[\d,]+$/.test(document.querySelector('#count').textContent), null, { timeout: WAIT });
    before = await count(page);
    ok(`the count shows ${before} (signups/count.json, published by the signup-count job)`);
    check((await page.locator('#blog').innerText()).includes('No posts yet'), 'the blog does not say "No posts yet" before the blog exists');
    ok('the live blog says "No posts yet" while blogs/news/latest.json is missing');
  });

  await step('ZIP pre-fill', async () => {
    await page.fill('input[name=zip]', '37415');
    await page.waitForFunction(() => document.querySelector('input[name=city]').value !== '');
    const city = await page.inputValue('input[name=city]');
    const state = await page.inputValue('input[name=state]');
    check(city === 'Chattanooga' && state === 'TN', `ZIP 37415 filled ${JSON.stringify([city, state])}`);
    ok('ZIP 37415 fills Chattanooga / TN from zip/37415.json');
    await page.fill('input[name=city]', 'My Town');
    await page.fill('input[name=zip]', '10001');
    await page.waitForFunction(() => document.querySelector('input[name=state]').value === 'NY');
    const kept = await page.inputValue('input[name=city]');
    check(kept === 'My Town', `a city typed by hand was overwritten with ${JSON.stringify(kept)}`);
    ok('ZIP 10001 fills the state (NY) but keeps a city typed by hand');
  });

  const email = `ada-${unique}@example.org`;
  const name = `Ada ${unique}`;
  await step('sign the petition', async () => {
    await fillSignup(page, email, name, '37415');
    await page.click('button[type=submit]');
    const id = await resultIs(page, 'stored');
    check(id, 'the result has no message id');
    await stored(id);
    console.log(`@signed ${email}`);
    ok(`the form's submit is stored in the database (message ${id}): "${await page.locator('#result').innerText()}"`);
  });

  await step('the count and the latest signers update through the jobs', async () => {
    await page.waitForFunction((n) => Number(document.querySelector('#count').textContent.replace(/,/g, '')) > n, before, { timeout: WAIT });
    ok(`the count went from ${before} to ${await count(page)} without a reload`);
    await page.locator('#latest li', { hasText: name }).waitFor();
    ok(`the latest signers list "${name}" (signups/latest.json)`);
  });

  await step('a post on the live blog', async () => {
    await api('POST', '/v1/admin/blogs', { slug: 'news', title: 'News' });
    const title = `Polls open ${unique}`;
    await api('POST', '/v1/admin/blogs/news/posts', { title, body_markdown: 'Polls open at **7am**.' });
    await page.locator('#blog article h3', { hasText: title }).waitFor();
    check((await page.locator('#blog article strong').first().innerText()) === '7am', 'the post body is not rendered');
    ok(`"${title}" appears on the page without a reload`);
  });

  await step('an alert made in the admin appears', async () => {
    const message = `Petition delivered at noon ${unique}`;
    const { id } = await api('POST', '/v1/admin/alerts', { message, severity: 'warning', link: 'https://example.org/petition' });
    const banner = page.locator('#alerts .levee-alert', { hasText: message });
    await banner.waitFor();
    check((await banner.getAttribute('class')).includes('levee-alert-warning'), 'the banner has no levee-alert-warning class');
    check((await banner.locator('a').getAttribute('href')) === 'https://example.org/petition', 'the banner has no link');
    ok(`alert ${id} shows as a warning banner with its link`);
    await api('DELETE', `/v1/admin/alerts/${id}`);
    await banner.waitFor({ state: 'detached' });
    ok('deleting it removes the banner');
  });

  await step('pausing the stream shows the delayed message; resuming hides it', async () => {
    const message = `New sign-ups are delayed a few minutes ${unique}`;
    await api('POST', '/v1/admin/streams/signups/pause', { message });
    const delayed = page.locator('#delayed');
    await page.locator('#delayed:visible', { hasText: message }).waitFor();
    ok(`paused: the page shows "${await delayed.innerText()}"`);
    await api('POST', '/v1/admin/streams/signups/resume');
    await delayed.waitFor({ state: 'hidden' });
    ok('resumed: the message is gone');
  });

  const waiting = `grace-${unique}@example.org`;
  const closed = `lin-${unique}@example.org`;
  await step('sign while levee is down', async () => {
    const other = await context.newPage();
    await other.goto(`${base}/`);
    await harness('stop');
    ok('levee killed (SIGKILL)');
    await fillSignup(page, waiting, `Grace ${unique}`, '37415');
    await page.click('button[type=submit]');
    await resultIs(page, 'retrying');
    ok(`tab 1: "${await page.locator('#result').innerText()}"`);
    await fillSignup(other, closed, `Lin ${unique}`, '10001');
    await other.click('button[type=submit]');
    await resultIs(other, 'retrying');
    const pending = await other.evaluate(() => window.levee.outbox().map((item) => item.payload.email));
    check(pending.includes(waiting) && pending.includes(closed), `the outbox holds ${JSON.stringify(pending)}`);
    await other.close();
    ok('tab 2 signed and was closed; localStorage holds both sign-ups');
  });

  await step('levee comes back: each sign-up arrives once', async () => {
    const answer = await harness('start');
    base = answer.replace(/^started\s+/, '').replace(/\/+$/, '');
    ok(`levee restarted at ${base}`);
    const id = await resultIs(page, 'stored');
    ok(`tab 1's retry went through and is stored (message ${id})`);
    const fresh = await context.newPage();
    await fresh.goto(`${base}/`);
    await fresh.waitForFunction(() => window.levee.outbox().length === 0, null, { timeout: WAIT });
    const delivered = await fresh.evaluate(() => window.__delivered);
    const late = delivered.find((d) => d.payload.email === closed);
    check(late, `a new tab did not send tab 2's sign-up from the outbox: ${JSON.stringify(delivered)}`);
    await resultIs(fresh, 'stored');
    await stored(late.id);
    ok(`a new tab sent tab 2's sign-up from the outbox on load; stored (message ${late.id})`);
    for (const signed of [waiting, closed]) {
      const keys = [...(keysByEmail.get(signed) || [])];
      check(keys.length === 1, `${signed} was sent with ${keys.length} Idempotency-Keys: ${keys}`);
      console.log(`@signed ${signed}`);
    }
    ok('every attempt of each sign-up carried the same Idempotency-Key');
  });

  noPageErrors(pageErrors);
  console.log('all demo checks passed');
} catch (e) {
  failed(e, pageErrors);
  await keepPages(context, 'demo-failure-page-');
} finally {
  stdin.close();
  if (browser) {
    await browser.close().catch(() => {});
  }
}
